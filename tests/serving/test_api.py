from conftest import rank_body, expected_order


def test_smoke(client):
    r = client.post("/api/v1/rank", json=rank_body())
    print(r.json())
    assert r.status_code == 200
    assert [d["doc_id"] for d in r.json()["ranked"]] == expected_order("v1", rank_body()["candidates"])
