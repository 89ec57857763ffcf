"""The model's input matrix from online vectors and request values, against a plain loop
over rows and columns (views laid out in column runs and scattered, rows missing)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.features.schema import assemble, compile_schema


def plain_matrix(entries, doc_ids, request, vectors, found):
    """Row by row, column by column: default, then the view's value if the row was found,
    then the request's value."""
    x = np.zeros((len(doc_ids), len(entries)), dtype=np.float32)
    for r in range(len(doc_ids)):
        for c, e in enumerate(entries):
            value = e.get("default", 0.0)
            source = e.get("source", "request")
            if source != "request" and found[source][r]:
                value = vectors[source][r, e["index"]]
            if request[r] and e["name"] in request[r]:
                value = request[r][e["name"]]
            x[r, c] = value
    return x


LAYOUTS = {
    "runs": [
        {"name": "q", "source": "request", "default": 0.5},
        *({"name": f"v{i}", "source": "qd", "index": i} for i in range(4)),
        *({"name": f"d{i}", "source": "doc", "index": i, "default": -1.0} for i in range(2)),
    ],
    "scattered": [
        {"name": "v2", "source": "qd", "index": 2},
        {"name": "q", "source": "request", "default": 0.5},
        {"name": "v0", "source": "qd", "index": 0},
        {"name": "d1", "source": "doc", "index": 1, "default": -1.0},
        {"name": "v3", "source": "qd", "index": 3},
        {"name": "d0", "source": "doc", "index": 0},
    ],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("found_share", [1.0, 0.6, 0.0])
def test_the_matrix_equals_a_plain_loop(layout, found_share):
    entries = LAYOUTS[layout]
    schema = compile_schema(entries)
    rng = np.random.default_rng(7)
    n = 9
    doc_ids = [f"d{i}" for i in range(n)]
    vectors = {
        "qd": rng.standard_normal((n, 5)).astype(np.float32),
        "doc": rng.standard_normal((n, 3)).astype(np.float32),
    }
    found = {view: rng.random(n) < found_share for view in vectors}
    for view in vectors:
        vectors[view][~found[view]] = np.nan
    request = [None] * n
    request[1] = {"q": 2.0, "v0": 9.0}  # a request value overrides the stored one
    request[4] = {"d1": -3.5, "unknown": 1.0}
    x, stats = assemble(schema, doc_ids, request, vectors, found)
    want = plain_matrix(entries, doc_ids, request, vectors, found)
    assert np.array_equal(x, want)
    assert stats.unknown_request == 1
    for view in vectors:
        assert stats.missing_online.get(view, 0) == int((~found[view]).sum())
    runs = schema.view_runs
    assert (runs["qd"] is not None) == (layout == "runs")
