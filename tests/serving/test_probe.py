import json
from conftest import rank_body, make_settings, serve


def test_probe(store):
    with serve(make_settings(store, max_body_bytes=2048)) as client:
        body = json.dumps(rank_body(40)).encode()
        def gen():
            for i in range(0, len(body), 500):
                yield body[i:i+500]
        r = client.post("/api/v1/rank", content=gen(), headers={"content-type": "application/json"})
        print("chunked", r.status_code, r.text[:200])
        b = rank_body(3)
        b["candidates"][0]["features"]["f3"] = 1e39
        r = client.post("/api/v1/rank", json=b)
        print("big", r.status_code, r.text[:200])
        b["candidates"][0]["features"]["f3"] = 3e38
        r = client.post("/api/v1/rank", json=b)
        print("big2", r.status_code, r.text[:200])
        raw = '{"query_id":"q","user_id":"\\ud800","candidates":[{"doc_id":"a"}]}'
        r = client.post("/api/v1/rank", content=raw, headers={"content-type": "application/json"})
        print("surr", r.status_code, r.text[:200])
