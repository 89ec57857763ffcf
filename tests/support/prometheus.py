"""A stand-in for Prometheus's HTTP query API over real replicas (no Prometheus binary here).

It scrapes every replica's real ``/metrics`` every ``interval`` seconds and keeps the
samples (as Prometheus does: answers come from the samples it has, not from a scrape at
query time), and answers ``GET /api/v1/query`` in Prometheus's JSON format for the query
shapes :class:`ltr.promotion.PrometheusFleet` sends (at the ``time`` given, else now): a
plain selector, ``sum by (labels) (increase(counter{matchers}[Ns]))`` and
``histogram_quantile(q, sum by (..., le) (increase(bucket{matchers}[Ns])))``.
``increase`` is computed from the samples inside the range with counter resets handled, a
series that appears inside the range counting from zero, and without Prometheus's
extrapolation to the range's edges. Anything else is answered with Prometheus's error
format, so a query the client should not send fails the test.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.net import LOOPBACK

Key = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, sorted labels incl. instance)

_SELECTOR = re.compile(r"^(\w+)(?:\{([^}]*)\})?$")
_INCREASE = re.compile(r"^sum by \(([\w, ]+)\) \(increase\((\w+)(?:\{([^}]*)\})?\[(\d+)s\]\)\)$")
_QUANTILE = re.compile(r"^histogram_quantile\(([\d.]+), (.+)\)$")


def _matchers(text: str | None) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, value = part.split("=", 1)
        out[name.strip()] = json.loads(value.strip())
    return out


class FakePrometheus:
    def __init__(self, replicas: Sequence[str], interval: float = 0.25) -> None:
        self.replicas = [u.rstrip("/") for u in replicas]
        self.interval = interval
        self.samples: list[tuple[float, dict[Key, float]]] = []
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                params = urllib.parse.parse_qs(url.query)
                query = params.get("query", [""])[0]
                at = float(params["time"][0]) if "time" in params else time.time()
                if url.path != "/api/v1/query":
                    self.send_error(404)
                    return
                body = json.dumps(fake.answer(query, at)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._scrape_loop, daemon=True),
        ]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_port}"

    # ------------------------------------------------------------ scraping
    def scrape(self) -> None:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        values: dict[Key, float] = {}
        for base in self.replicas:
            try:
                text = httpx.get(f"{base}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            instance = base.split("//", 1)[1]
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    labels = tuple(sorted({**s.labels, "instance": instance}.items()))
                    values[(s.name, labels)] = float(s.value)
        with self._lock:
            self.samples.append((time.time(), values))

    def _scrape_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.scrape()

    # ------------------------------------------------------------ queries
    def answer(self, query: str, at: float) -> dict[str, Any]:
        self.queries.append(query)
        try:
            result = self._evaluate(query, at)
        except ValueError as exc:
            return {"status": "error", "errorType": "bad_data", "error": str(exc)}
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def _evaluate(self, query: str, now: float) -> list[dict[str, Any]]:
        q = _QUANTILE.match(query)
        if q:
            return self._quantile(float(q.group(1)), q.group(2), now)
        m = _INCREASE.match(query)
        if m:
            by = [b.strip() for b in m.group(1).split(",")]
            sums = self._increase(m.group(2), _matchers(m.group(3)), int(m.group(4)), by, now)
            return [{"metric": dict(k), "value": [now, repr(v)]} for k, v in sorted(sums.items())]
        s = _SELECTOR.match(query)
        if s:
            want = _matchers(s.group(2))
            with self._lock:
                _, last = [(t, v) for t, v in self.samples if t <= now][-1]
            return [
                {"metric": {"__name__": name, **dict(labels)}, "value": [now, repr(v)]}
                for (name, labels), v in sorted(last.items())
                if name == s.group(1) and all(dict(labels).get(k) == x for k, x in want.items())
            ]
        raise ValueError(f"this stand-in does not evaluate {query!r}")

    def _increase(
        self, name: str, want: dict[str, str], range_s: int, by: list[str], now: float
    ) -> dict[tuple[tuple[str, str], ...], float]:
        with self._lock:
            window = [(t, v) for t, v in self.samples if now - range_s <= t <= now]
        per_series: dict[Key, float] = {}
        prev: dict[Key, float] = {}
        for i, (_, values) in enumerate(window):
            for key, value in values.items():
                if key[0] != name or any(dict(key[1]).get(k) != x for k, x in want.items()):
                    continue
                if key not in prev:
                    per_series[key] = 0.0 if i == 0 else value  # born inside the range
                else:
                    p = prev[key]
                    per_series[key] += value - p if value >= p else value
                prev[key] = value
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for (_, labels), inc in per_series.items():
            group = tuple(sorted((k, v) for k, v in labels if k in by))
            out[group] = out.get(group, 0.0) + inc
        return out

    def _quantile(self, q: float, inner: str, now: float) -> list[dict[str, Any]]:
        from ltr.promotion import quantile

        m = _INCREASE.match(inner)
        if not m or "le" not in m.group(1):
            raise ValueError(f"histogram_quantile needs a sum by (..., le): {inner!r}")
        by = [b.strip() for b in m.group(1).split(",")]
        sums = self._increase(m.group(2), _matchers(m.group(3)), int(m.group(4)), by, now)
        groups: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
        for labels, value in sums.items():
            d = dict(labels)
            le = float(d.pop("le"))
            groups.setdefault(tuple(sorted(d.items())), {})[le] = value
        result = []
        for labels, buckets in sorted(groups.items()):
            value = quantile(q, buckets)
            result.append(
                {"metric": dict(labels), "value": [now, "NaN" if value is None else repr(value)]}
            )
        return result

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakePrometheus:
        self.scrape()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
