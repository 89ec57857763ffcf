"""The model store (DESIGN.md, "Model artifact" and "Reliability"): artifacts are verified
before they serve, a broken one is refused while the previous version keeps serving, and a
new version or routing is picked up without a restart, even under concurrent traffic."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.net import WAIT_S
from support.serving import (
    FEATURES,
    LiveServer,
    Store,
    feature_matrix,
    linear_scores,
    make_candidates,
    make_settings,
    rank_body,
    serve,
    wait_until,
)

from ltr.utils.io import sha256_file, write_json_atomic
from serving.model_store import LAST_GOOD_FILE, ArtifactError, ModelStore, load_version


def _edit_metadata(store: Store, folder: str, /, **changes: object) -> None:
    meta = store.metadata(folder)
    meta.update(changes)
    write_json_atomic(store.root / "versions" / folder / "metadata.json", meta)


def _served_version(client) -> str:
    r = client.post("/api/v1/rank", json=rank_body(3))
    assert r.status_code == 200, r.text
    version: str = r.json()["model_version"]
    return version


# ----------------------------------------------------------------- verification
def test_an_exported_artifact_loads_with_its_schema_and_scores_like_its_weights(store):
    model = load_version(store.root, "v1")
    assert model.version == "v1"
    assert model.schema.names == tuple(FEATURES)
    assert model.n_features == 4
    x = feature_matrix(make_candidates(6))
    np.testing.assert_allclose(model.score(x), linear_scores("v1", x), rtol=1e-5, atol=1e-5)


def test_an_artifact_whose_sha256_does_not_match_its_metadata_is_refused(store):
    store.clone("v1", "v9", sha256="0" * 64)
    with pytest.raises(ArtifactError, match=r"sha256 \w+… does not match metadata 000000000000…"):
        load_version(store.root, "v9")


def test_a_model_file_changed_after_export_is_refused(store):
    folder = store.clone("v1", "v9")
    with open(folder / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        load_version(store.root, "v9")


def test_a_feature_schema_that_does_not_match_the_onnx_input_is_refused(store):
    store.clone("v1", "v9")
    schema = store.metadata("v9")["feature_schema"][:3]
    _edit_metadata(store, "v9", feature_schema=schema)
    with pytest.raises(ArtifactError, match="ONNX input has 4 features, metadata schema has 3"):
        load_version(store.root, "v9")


def test_a_feature_schema_naming_a_feature_twice_is_refused(store):
    store.clone("v1", "v9")
    schema = store.metadata("v9")["feature_schema"]
    schema[3]["name"] = schema[0]["name"]
    _edit_metadata(store, "v9", feature_schema=schema)
    with pytest.raises(ArtifactError, match="bad feature schema: feature 'f0' appears twice"):
        load_version(store.root, "v9")


def test_metadata_that_names_another_version_is_refused(store):
    store.clone("v1", "v9")
    _edit_metadata(store, "v9", version="v1")
    with pytest.raises(ArtifactError, match="metadata says version 'v1', folder is 'v9'"):
        load_version(store.root, "v9")


def test_a_version_folder_without_its_model_file_is_refused(store):
    folder = store.clone("v1", "v9")
    (folder / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx or metadata\.json is missing"):
        load_version(store.root, "v9")


def test_a_file_that_is_not_onnx_is_refused_even_when_its_sha256_matches(store):
    folder = store.clone("v1", "v9")
    (folder / "model.onnx").write_bytes(b"this is not an ONNX graph")
    _edit_metadata(store, "v9", sha256=sha256_file(folder / "model.onnx"))
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load it"):
        load_version(store.root, "v9")


def test_unreadable_metadata_is_refused(store):
    folder = store.clone("v1", "v9")
    (folder / "metadata.json").write_text("{ not json")
    with pytest.raises(ArtifactError, match="unreadable metadata"):
        load_version(store.root, "v9")


def test_the_initial_load_fails_when_routing_names_a_broken_version(store):
    store.clone("v1", "v9", sha256="0" * 64)
    store.serve("v9")
    with pytest.raises(ArtifactError, match="sha256"):
        ModelStore(store.root).load()


def test_a_new_process_serves_production_alone_when_a_canary_version_is_broken(store):
    store.clone("v1", "v9", sha256="0" * 64)
    store.route(
        strategy="canary",
        production="v1",
        variants=[
            {"name": "champion", "version": "v1", "weight": 90},
            {"name": "canary", "version": "v9", "weight": 10},
        ],
    )
    refused: list[str] = []
    ms = ModelStore(store.root, on_refused=lambda v, _why: refused.append(v))
    ms.load()
    assert sorted(ms.snapshot.models) == ["v1"]
    assert ms.snapshot.config.strategy == "single" and ms.snapshot.config.production == "v1"
    assert refused == ["v9"]
    assert ms.degraded is not None and "v9" in ms.degraded
    # the canary fixed in place: the next poll serves the routing as written
    _edit_metadata(store, "v9", sha256=sha256_file(store.root / "versions/v9/model.onnx"))
    assert ms.poll() is True
    assert sorted(ms.snapshot.models) == ["v1", "v9"] and ms.degraded is None


def test_a_new_process_starts_from_the_last_good_routing_when_production_is_broken(store):
    ModelStore(store.root).load()  # an earlier process served v1 completely
    assert json.loads((store.root / LAST_GOOD_FILE).read_text())["production"] == "v1"
    store.clone("v2", "v8", sha256="0" * 64)
    store.serve("v8")
    ms = ModelStore(store.root)
    ms.load()
    assert sorted(ms.snapshot.models) == ["v1"]
    assert ms.degraded is not None and "last good routing" in ms.degraded


def test_the_app_reports_refused_versions_in_ready_and_metrics(store):
    store.clone("v1", "v9", sha256="0" * 64)
    store.route(
        strategy="canary",
        production="v1",
        variants=[
            {"name": "champion", "version": "v1", "weight": 50},
            {"name": "canary", "version": "v9", "weight": 50},
        ],
    )
    with serve(make_settings(store)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"]["models"].startswith("degraded:")
        for _ in range(5):
            assert _served_version(client) == "v1"
        metrics = client.get("/metrics").text
        assert 'ltr_model_versions_refused_total{version="v9"}' in metrics


# ----------------------------------------------------------------- refusal keeps serving
def test_a_routing_file_naming_a_broken_version_is_refused_until_the_version_is_fixed(store):
    ms = ModelStore(store.root)
    ms.load()
    store.clone("v2", "v3", sha256="0" * 64)
    store.serve("v3")
    assert ms.poll() is False
    assert sorted(ms.snapshot.models) == ["v1"]
    assert ms.snapshot.config.production == "v1"
    assert ms.last_error is not None and "sha256" in ms.last_error
    assert ms.failures == 1
    assert ms.poll() is False  # still broken, still refused, still v1
    assert sorted(ms.snapshot.models) == ["v1"]
    _edit_metadata(store, "v3", sha256=sha256_file(store.root / "versions/v3/model.onnx"))
    assert ms.poll() is True
    assert sorted(ms.snapshot.models) == ["v3"]
    assert ms.last_error is None


def test_the_app_keeps_serving_the_previous_version_while_routing_names_a_broken_one(store):
    with serve(make_settings(store)) as client:
        store.clone("v2", "v3", sha256="0" * 64)
        store.serve("v3")
        state = client.app.state.ltr
        assert wait_until(lambda: state.store.failures >= 2, timeout=WAIT_S)
        for _ in range(5):
            assert _served_version(client) == "v1"
        assert "sha256" in (state.store.last_error or "")
        assert client.get("/ready").status_code == 200
        # fixed in place: picked up without another routing change
        _edit_metadata(store, "v3", sha256=sha256_file(store.root / "versions/v3/model.onnx"))
        assert wait_until(lambda: _served_version(client) == "v3", timeout=WAIT_S)


def test_an_invalid_routing_file_is_refused_and_the_previous_routing_keeps_serving(store):
    with serve(make_settings(store)) as client:
        state = client.app.state.ltr
        path = store.root / "routing.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text('{"version": 99, "strategy": "single", "production": ')
        tmp.replace(path)
        assert wait_until(lambda: state.store.routing_rejected >= 1, timeout=WAIT_S)
        assert _served_version(client) == "v1"
        assert state.store.snapshot.config.production == "v1"
        tmp.write_text(json.dumps({"version": 100, "strategy": "single", "production": "v2"}))
        tmp.replace(path)
        assert wait_until(lambda: _served_version(client) == "v2", timeout=WAIT_S)


# ----------------------------------------------------------------- hot reload
def test_a_version_published_while_the_app_runs_serves_within_a_few_reload_intervals(store):
    with serve(make_settings(store)) as client:
        assert _served_version(client) == "v1"
        store.clone("v2", "v4")  # a version the app has never seen
        store.serve("v4")
        assert wait_until(lambda: _served_version(client) == "v4", timeout=WAIT_S)
        body = rank_body(10, seed=11)
        r = client.post("/api/v1/rank", json=body).json()
        got = {d["doc_id"]: d["score"] for d in r["ranked"]}
        want = linear_scores("v2", feature_matrix(body["candidates"]))
        for i, c in enumerate(body["candidates"]):
            assert got[c["doc_id"]] == pytest.approx(float(want[i]), rel=1e-5, abs=1e-5)
        reloads = client.get("/metrics").text
        assert 'ltr_model_reloads_total{result="swapped"}' in reloads


def test_a_model_swap_under_concurrent_traffic_fails_no_request(store: Store):
    """Clients hammer a real server while routing.json flips between v1 and v2."""
    body = rank_body(12, seed=21)
    expected = {
        v: dict(
            zip(
                [c["doc_id"] for c in body["candidates"]],
                linear_scores(v, feature_matrix(body["candidates"])).tolist(),
                strict=True,
            )
        )
        for v in ("v1", "v2")
    }
    problems: list[str] = []
    versions: Counter[str] = Counter()
    stop = threading.Event()
    lock = threading.Lock()

    def client_loop(base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=5.0) as http:
            while not stop.is_set():
                try:
                    r = http.post("/api/v1/rank", json=body)
                except httpx.HTTPError as exc:
                    with lock:
                        problems.append(f"transport error: {exc!r}")
                    continue
                if r.status_code != 200:
                    with lock:
                        problems.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                out = r.json()
                version = out["model_version"]
                with lock:
                    versions[version] += 1
                if version not in expected:
                    with lock:
                        problems.append(f"unexpected version {version}")
                    continue
                for d in out["ranked"]:
                    if abs(d["score"] - expected[version][d["doc_id"]]) > 1e-4:
                        with lock:
                            problems.append(f"{version} scored {d['doc_id']} {d['score']}")
                        break

    with LiveServer(make_settings(store, reload_interval_s=0.1)) as server:
        threads = [threading.Thread(target=client_loop, args=(server.url,)) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            swaps = 0
            for i in range(8):
                target = "v2" if i % 2 == 0 else "v1"
                with lock:
                    before = versions[target]
                store.serve(target)
                # the swap is seen: the clients get answers from the new version
                assert wait_until(lambda t=target, b=before: versions[t] >= b + 5, timeout=WAIT_S)
                swaps += 1
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
    assert problems == []
    assert versions["v1"] > 10 and versions["v2"] > 10, versions
    assert swaps == 8


def test_the_store_root_can_be_given_as_a_path(tmp_path: Path, artifact_templates: Path):
    s = Store(tmp_path / "elsewhere", artifact_templates)
    s.install("v2")
    s.serve("v2")
    with serve(make_settings(s.root)) as client:
        assert _served_version(client) == "v2"
