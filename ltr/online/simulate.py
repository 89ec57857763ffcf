"""Simulated users for a running rank service: real HTTP requests, clicks from a click model.

For each simulated query the simulator picks a held-out LETOR query (uniformly, with
replacement, among queries with at least two documents and, unless ``all_queries``, at least
one relevant one: clicks on a list without any relevant document are noise, and the
calibration of :mod:`ltr.online.power` samples the same queries), sends ``POST /api/v1/rank`` with
its documents as candidates (by id, or with their feature values when ``send_features``), and
answers the ranked list with clicks drawn from a :class:`~ltr.online.clickmodel.ClickModel`
on the graded labels (``POST /api/v1/feedback``, 0-based positions). Users are drawn from a
pool of ``n_users`` ids, so A/B routing by user hash sees returning users.

Reproducible: query ``i`` draws its query, user and clicks from a generator seeded by
``(seed, i)``, whatever the thread that sends it. Bounded: loopback services only, at most
``MAX_QUERIES`` queries and ``MAX_SECONDS`` of wall time (it stops early and says so).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ltr.data.dataset import LetorDataset
from ltr.online.clickmodel import ClickModel

MAX_QUERIES = 100_000
MAX_SECONDS = 3600.0
MAX_CONCURRENCY = 32
RETRIES = 3


class SimulationError(ValueError):
    """The simulation cannot start (bad target, bad bounds, unusable data)."""


def require_loopback(url: str) -> str:
    """``url`` without a trailing slash, if its host is a loopback address; else an error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SimulationError(f"service URL must be http(s)://host:port, got {url!r}")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise SimulationError(f"cannot resolve {parts.hostname!r}: {exc}") from None
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise SimulationError(
                f"the traffic simulator only targets a service on this machine (loopback); "
                f"{parts.hostname!r} resolves to {info[4][0]}"
            )
    return url.rstrip("/")


@dataclass
class SimulationReport:
    url: str
    requested: int
    sent: int = 0
    answered: int = 0
    feedback_sent: int = 0
    clicks: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    #: Mean NDCG@10 of the lists shown, by variant, from the graded labels (ground truth).
    shown_ndcg_at_10: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_early: str | None = None
    click_model: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ndcg_at(labels: np.ndarray, shown: np.ndarray, k: int = 10) -> float | None:
    ideal = np.sort(labels)[::-1][:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = float(((2.0**ideal - 1) * disc[: len(ideal)]).sum())
    if idcg <= 0:
        return None
    top = shown[:k]
    return float(((2.0**top - 1) * disc[: len(top)]).sum()) / idcg


class TrafficSimulator:
    """Sends simulated search traffic to a loopback rank service; see the module docstring."""

    def __init__(
        self,
        url: str,
        data: LetorDataset,
        *,
        click_model: ClickModel | None = None,
        seed: int = 0,
        n_users: int = 500,
        top_k: int = 10,
        send_features: bool = False,
        concurrency: int = 4,
        timeout_s: float = 10.0,
        all_queries: bool = False,
    ) -> None:
        self.url = require_loopback(url)
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise SimulationError(
                f"concurrency must lie in 1..{MAX_CONCURRENCY}, got {concurrency}"
            )
        if n_users < 1 or top_k < 1:
            raise SimulationError("n_users and top_k must be >= 1")
        self.click_model = click_model or ClickModel(max_grade=max(1, int(np.max(data.labels))))
        self.seed, self.n_users, self.top_k = seed, n_users, top_k
        self.send_features, self.concurrency, self.timeout_s = send_features, concurrency, timeout_s
        self.queries: list[tuple[str, list[str], dict[str, float], list[dict[str, Any]]]] = []
        names = list(data.feature_names)
        for qid, rows in data.iter_queries():
            if rows.stop - rows.start < 2:
                continue
            doc_ids = [str(d) for d in data.doc_ids[rows]]
            if len(set(doc_ids)) != len(doc_ids):
                raise SimulationError(f"query {qid} has duplicate document ids")
            labels = dict(zip(doc_ids, data.labels[rows].astype(float).tolist(), strict=True))
            if not all_queries and max(labels.values()) <= 0:
                continue
            if send_features:
                feats = data.features[rows].astype(float)
                cands = [
                    {"doc_id": d, "features": dict(zip(names, feats[j].tolist(), strict=True))}
                    for j, d in enumerate(doc_ids)
                ]
            else:
                cands = [{"doc_id": d} for d in doc_ids]
            self.queries.append((str(qid), doc_ids, labels, cands))
        if not self.queries:
            what = "" if all_queries else " and a relevant one (label > 0)"
            raise SimulationError(f"the data has no query with at least two documents{what}")

    def plan(self, i: int) -> tuple[int, str, np.random.Generator]:
        """Query ``i``'s query (index into ``queries``), user, and the generator its clicks
        are drawn from: a function of ``(seed, i)`` alone."""
        rng = np.random.default_rng([self.seed, i])
        q = int(rng.integers(len(self.queries)))
        return q, f"sim-user-{int(rng.integers(self.n_users))}", rng

    def _post(self, client: Any, path: str, body: dict[str, Any]) -> Any:
        """POST, retrying (at most ``RETRIES`` times) when the service asks to come back
        later (429 or 503 with ``Retry-After``), as a well-behaved client does."""
        for attempt in range(RETRIES + 1):
            resp = client.post(f"{self.url}{path}", json=body)
            after = resp.headers.get("retry-after")
            if resp.status_code not in (429, 503) or after is None or attempt == RETRIES:
                return resp
            try:
                wait = min(float(after), 5.0)
            except ValueError:
                return resp
            time.sleep(wait)
        return resp  # pragma: no cover - the loop always returns

    def _one(self, client: Any, i: int, report: SimulationReport, lock: threading.Lock) -> None:
        q, user, rng = self.plan(i)
        qid, _docs, labels, cands = self.queries[q]
        body = {"query_id": qid, "user_id": user, "candidates": cands, "top_k": self.top_k}
        try:
            resp = self._post(client, "/api/v1/rank", body)
        except Exception as exc:  # network trouble is counted, not fatal
            with lock:
                report.sent += 1
                report.errors[type(exc).__name__] = report.errors.get(type(exc).__name__, 0) + 1
            return
        with lock:
            report.sent += 1
        if resp.status_code != 200:
            with lock:
                key = f"rank_{resp.status_code}"
                report.errors[key] = report.errors.get(key, 0) + 1
            return
        out = resp.json()
        shown = [r["doc_id"] for r in out["ranked"]]
        shown_labels = np.array([labels.get(d, 0.0) for d in shown])
        clicked = self.click_model.clicks(shown_labels, rng)
        ndcg = _ndcg_at(np.array(list(labels.values())), shown_labels)
        with lock:
            report.answered += 1
            report.variants[out["variant"]] = report.variants.get(out["variant"], 0) + 1
            if ndcg is not None:
                self._ndcg[out["variant"]].append(ndcg)
        if len(clicked) == 0:
            return
        fb = {
            "request_id": out["request_id"],
            "user_id": user,
            "clicks": [{"doc_id": shown[p], "position": int(p)} for p in clicked],
        }
        try:
            r2 = self._post(client, "/api/v1/feedback", fb)
            ok = r2.status_code == 200
            key = f"feedback_{r2.status_code}"
        except Exception as exc:
            ok, key = False, type(exc).__name__
        with lock:
            if ok:
                report.feedback_sent += 1
                report.clicks += len(clicked)
            else:
                report.errors[key] = report.errors.get(key, 0) + 1

    def run(
        self,
        n_queries: int,
        *,
        max_seconds: float = 600.0,
        progress: Callable[[int], None] | None = None,
    ) -> SimulationReport:
        """Send ``n_queries`` simulated queries (or stop after ``max_seconds``)."""
        import httpx

        if not 1 <= n_queries <= MAX_QUERIES:
            raise SimulationError(f"n_queries must lie in 1..{MAX_QUERIES}, got {n_queries}")
        if not 0 < max_seconds <= MAX_SECONDS:
            raise SimulationError(
                f"max_seconds must lie in (0, {MAX_SECONDS:.0f}], got {max_seconds}"
            )
        report = SimulationReport(
            url=self.url,
            requested=n_queries,
            click_model=asdict(self.click_model),
            seed=self.seed,
        )
        self._ndcg: defaultdict[str, list[float]] = defaultdict(list)
        lock = threading.Lock()
        deadline = time.monotonic() + max_seconds
        t0 = time.perf_counter()
        counter = iter(range(n_queries))
        stop = threading.Event()

        def worker() -> None:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            with httpx.Client(timeout=self.timeout_s, limits=limits) as client:
                while not stop.is_set():
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    if time.monotonic() > deadline:
                        stop.set()
                        return
                    self._one(client, i, report, lock)
                    if progress is not None and i % 500 == 499:
                        progress(i + 1)

        with ThreadPoolExecutor(self.concurrency) as pool:
            for f in [pool.submit(worker) for _ in range(self.concurrency)]:
                f.result()
        report.seconds = round(time.perf_counter() - t0, 2)
        if stop.is_set() and report.sent < n_queries:
            report.stopped_early = f"time limit of {max_seconds:.0f} s reached"
        report.shown_ndcg_at_10 = {
            v: round(float(np.mean(x)), 4) for v, x in sorted(self._ndcg.items()) if x
        }
        report.errors = dict(Counter(report.errors))
        return report
