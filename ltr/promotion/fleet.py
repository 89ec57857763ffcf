"""The rank service's counters summed over every replica, for :mod:`ltr.promotion.observation`.

Behind a Kubernetes Service each request lands on some pod, so counters read through the
Service's URL come from a random replica each time (and a switch of pod looks like a
restart). A promotion therefore reads the whole fleet, in one of two ways:

- :class:`PrometheusFleet` (a Prometheus URL is configured): instant queries of the HTTP
  API (``/api/v1/query``): ``sum by (model_version, outcome) (increase(...[W]))`` of
  ``ltr_model_requests_total`` and ``histogram_quantile(0.99, sum by (model_version, le)
  (increase(ltr_model_latency_seconds_bucket[W])))``, ``W`` the time since the window began.
- :class:`ScrapeFleet` (otherwise): ``GET /api/v1/models`` and ``GET /metrics`` of every
  replica (listed, or found through the Kubernetes EndpointSlices of the Service, see
  :func:`kubernetes_replicas`), each replica's counters turned into increases since the
  window began the way Prometheus does it (a counter that goes down is a restart of that
  replica: its new value is the increase since), then summed.

Per version the reading has requests, server errors (5xx), client errors (4xx: the
request's fault, judged only against the champion's rate), the latency of every request
(failures included) as a histogram or its p99, and each replica's routing version.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: GET url -> response body; raises on failure (tests pass fakes).
Fetch = Callable[[str], str]
MODEL_BUCKET = "ltr_model_latency_seconds_bucket"
#: The histogram of successful rank requests only (services from before the model metrics).
LEGACY_BUCKET = "ltr_request_latency_seconds_bucket"
_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode("utf-8")


@dataclass
class VersionTotals:
    """One version's numbers over the window, summed over the replicas."""

    requests: int = 0
    errors: int = 0  # failed on the server's side (5xx)
    client_errors: int = 0  # refused for the request's fault (4xx)
    latency_sum_ms: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # cumulative, by upper bound
    p99_s: float | None = None  # when the source computes the quantile itself

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_sum_ms / self.requests if self.requests else None


@dataclass
class FleetReading:
    versions: dict[str, VersionTotals]
    #: Per replica (URL, or Prometheus instance): the routing version it serves, None when
    #: it did not answer.
    routing: dict[str, int | None]
    production: str | None = None


class Fleet(Protocol):
    failures: int
    last_error: str

    def describe(self) -> str: ...

    def routing_versions(self) -> dict[str, int | None]: ...

    def start(self) -> None: ...

    def read(self) -> FleetReading | None: ...


# ----------------------------------------------------------------- scraping the replicas
class _Increase:
    """A counter's increase since a baseline, across restarts (a drop means a reset)."""

    __slots__ = ("prev", "total")

    def __init__(self, value: float, counted: bool) -> None:
        self.prev = value
        self.total = value if counted else 0.0

    def update(self, value: float) -> None:
        self.total += value - self.prev if value >= self.prev else value
        self.prev = value


def _models_counters(doc: dict[str, Any]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for row in doc.get("versions", []):
        v, n = str(row["version"]), float(row.get("requests") or 0)
        out[(v, "requests")] = n
        out[(v, "errors")] = float(row.get("errors") or 0)
        out[(v, "client_errors")] = float(row.get("client_errors") or 0)
        out[(v, "latency_ms")] = float(row.get("mean_latency_ms") or 0) * n
    return out


def _bucket_counters(text: str) -> dict[tuple[str, str], float]:
    """Cumulative latency buckets by (version, "le:<bound>"), every outcome when the service
    has ``ltr_model_latency_seconds``, else its successful rank requests."""
    from prometheus_client.parser import text_string_to_metric_families

    model: dict[tuple[str, str], float] = {}
    legacy: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == MODEL_BUCKET:
                key = (s.labels["model_version"], f"le:{s.labels['le']}")
                model[key] = model.get(key, 0.0) + float(s.value)
            elif s.name == LEGACY_BUCKET and s.labels.get("endpoint") == "rank":
                key = (s.labels["model_version"], f"le:{s.labels['le']}")
                legacy[key] = legacy.get(key, 0.0) + float(s.value)
    return model or legacy


class ScrapeFleet:
    """Every replica read directly; ``replicas`` is a list of base URLs or a function that
    lists them (asked again on each read, for pods that come and go)."""

    def __init__(
        self, replicas: Sequence[str] | Callable[[], Sequence[str]], fetch: Fetch | None = None
    ) -> None:
        self._replicas = replicas
        self.get = fetch or http_get
        self.failures = 0
        self.last_error = ""
        self._series: dict[tuple[str, str, str], _Increase] = {}
        self._seen: set[str] = set()
        self._started = False
        self.production: str | None = None

    def urls(self) -> list[str]:
        found = self._replicas() if callable(self._replicas) else self._replicas
        return [u.rstrip("/") for u in found]

    def describe(self) -> str:
        urls = self.urls() if not callable(self._replicas) else ["(discovered)"]
        return f"{len(urls)} replica(s): {', '.join(urls)}"

    def _get(self, url: str) -> str | None:
        try:
            return self.get(url)
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{url}: {type(exc).__name__}: {exc}"
            return None

    def _models(self, base: str) -> dict[str, Any] | None:
        body = self._get(f"{base}/api/v1/models")
        if body is None:
            return None
        try:
            doc: dict[str, Any] = json.loads(body)
        except json.JSONDecodeError as exc:
            self.failures += 1
            self.last_error = f"{base}/api/v1/models: not JSON: {exc}"
            return None
        return doc

    def routing_versions(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for base in self._urls_or_none():
            doc = self._models(base)
            out[base] = int(doc.get("routing_version", 0)) if doc is not None else None
            if doc is not None:
                self.production = doc.get("production") or self.production
        return out

    def _urls_or_none(self) -> list[str]:
        try:
            return self.urls()
        except Exception as exc:
            self.failures += 1
            self.last_error = f"listing the replicas: {type(exc).__name__}: {exc}"
            return []

    def _scrape(self) -> dict[str, int | None]:
        routing: dict[str, int | None] = {}
        for base in self._urls_or_none():
            doc = self._models(base)
            if doc is None:
                routing[base] = None
                continue
            routing[base] = int(doc.get("routing_version", 0))
            self.production = doc.get("production") or self.production
            values = _models_counters(doc)
            text = self._get(f"{base}/metrics")
            if text is not None:
                try:
                    values.update(_bucket_counters(text))
                except Exception as exc:  # a body that is not the exposition format
                    log.info("unreadable %s/metrics: %s", base, exc)
            new_replica = self._started and base not in self._seen
            self._seen.add(base)
            for (version, what), value in values.items():
                key = (base, version, what)
                inc = self._series.get(key)
                if inc is None:
                    # a series born during the window counts whole; one there at the start
                    # is the baseline; a replica first seen during the window is new
                    self._series[key] = _Increase(value, self._started or new_replica)
                else:
                    inc.update(value)
        return routing

    def start(self) -> None:
        self._series.clear()
        self._seen.clear()
        self._started = False
        self._scrape()
        self._started = True

    def read(self) -> FleetReading | None:
        routing = self._scrape()
        if not any(v is not None for v in routing.values()):
            return None
        versions: dict[str, VersionTotals] = {}
        for (_, version, what), inc in self._series.items():
            t = versions.setdefault(version, VersionTotals())
            if what == "requests":
                t.requests += round(inc.total)
            elif what == "errors":
                t.errors += round(inc.total)
            elif what == "client_errors":
                t.client_errors += round(inc.total)
            elif what == "latency_ms":
                t.latency_sum_ms += inc.total
            else:
                le = float(what.removeprefix("le:"))
                t.buckets[le] = t.buckets.get(le, 0.0) + inc.total
        return FleetReading(versions, routing, self.production)


# ----------------------------------------------------------------- Prometheus
class PrometheusFleet:
    """Aggregates from a Prometheus server that scrapes every replica (its HTTP API).

    ``selector``: label matchers that pick the service's series, e.g.
    ``namespace="ltr",service="ltr-serving"`` (empty: every series of these names).
    Prometheus sees what it scraped: the window should span several scrape intervals.
    """

    def __init__(
        self,
        url: str,
        selector: str = "",
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url.rstrip("/")
        self.selector = selector.strip().strip("{}")
        self.get = fetch or http_get
        self.clock = clock  # Unix time: queries are evaluated at an explicit ``time``
        self.failures = 0
        self.last_error = ""
        self._t0: float | None = None

    def describe(self) -> str:
        return f"Prometheus {self.url}" + (f" {{{self.selector}}}" if self.selector else "")

    def _sel(self, *extra: str) -> str:
        parts = [p for p in (*extra, self.selector) if p]
        return "{" + ",".join(parts) + "}" if parts else ""

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result vector of an instant query (evaluated at Unix time ``at``, default
        now); raises with Prometheus's error text."""
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        body = self.get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params))
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {promql!r}: {doc.get('error', doc)}")
        data = doc.get("data") or {}
        if data.get("resultType") != "vector":
            raise RuntimeError(f"Prometheus answered {data.get('resultType')!r} to {promql!r}")
        result: list[dict[str, Any]] = data.get("result") or []
        return result

    def _try(self, promql: str, at: float | None = None) -> list[dict[str, Any]] | None:
        try:
            return self.query(promql, at)
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None

    def routing_versions(self) -> dict[str, int | None]:
        rows = self._try(f"ltr_routing_version{self._sel()}")
        out: dict[str, int | None] = {}
        for row in rows or []:
            m = row.get("metric", {})
            name = m.get("instance") or m.get("pod") or json.dumps(m, sort_keys=True)
            out[str(name)] = int(float(row["value"][1]))
        return out

    def start(self) -> None:
        self._t0 = self.clock()

    def read(self) -> FleetReading | None:
        """The window's increases, every query evaluated at the same instant ``at`` over
        the range back to the start (whole seconds, rounded up)."""
        at = self.clock()
        w = f"{max(1, math.ceil(at - (self._t0 if self._t0 is not None else at)))}s"
        counts = self._try(
            "sum by (model_version, outcome) "
            f"(increase(ltr_model_requests_total{self._sel()}[{w}]))",
            at,
        )
        if counts is None:
            return None
        versions: dict[str, VersionTotals] = {}
        for row in counts:
            m, value = row.get("metric", {}), float(row["value"][1])
            if not math.isfinite(value):
                continue
            t = versions.setdefault(str(m.get("model_version", "")), VersionTotals())
            n = round(value)
            t.requests += n
            if m.get("outcome") == "server_error":
                t.errors += n
            elif m.get("outcome") == "client_error":
                t.client_errors += n
        sums = self._try(
            f"sum by (model_version) (increase(ltr_model_latency_seconds_sum{self._sel()}[{w}]))",
            at,
        )
        for row in sums or []:
            v = str(row.get("metric", {}).get("model_version", ""))
            value = float(row["value"][1])
            if v in versions and math.isfinite(value):
                versions[v].latency_sum_ms = value * 1000
        p99 = self._try(
            "histogram_quantile(0.99, sum by (model_version, le) "
            f"(increase(ltr_model_latency_seconds_bucket{self._sel()}[{w}])))",
            at,
        )
        for row in p99 or []:
            v = str(row.get("metric", {}).get("model_version", ""))
            value = float(row["value"][1])
            if v in versions and math.isfinite(value):
                versions[v].p99_s = value
        return FleetReading(versions, self.routing_versions())


# ----------------------------------------------------------------- Kubernetes
def kubernetes_replicas(
    service: str,
    *,
    namespace: str | None = None,
    api_url: str | None = None,
    token: str | None = None,
    ca_file: str | None = None,
    port: str | int | None = None,
) -> list[str]:
    """Base URLs of the ready endpoints of a Kubernetes Service, from its EndpointSlices
    (``discovery.k8s.io/v1``). In a pod, the API address, the service-account token, its CA
    and the namespace come from the standard in-cluster locations; ``service`` may be
    ``namespace/name``. ``port``: the port's name or number (default: the one named
    ``http``, else the first). Needs RBAC ``list`` on ``endpointslices``."""
    import ssl

    if "/" in service:
        namespace, service = service.split("/", 1)
    if api_url is None:
        host, api_port = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        if not host:
            raise RuntimeError(
                "not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset): "
                "list the replicas instead (--replica URL ...)"
            )
        api_url = f"https://{host}:{api_port}"
    if namespace is None:
        ns_file = _SA_DIR / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else "default"
    if token is None and (_SA_DIR / "token").is_file():
        token = (_SA_DIR / "token").read_text().strip()
    if ca_file is None and (_SA_DIR / "ca.crt").is_file():
        ca_file = str(_SA_DIR / "ca.crt")
    query = urllib.parse.urlencode({"labelSelector": f"kubernetes.io/service-name={service}"})
    path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    url = f"{api_url.rstrip('/')}{path}?{query}"
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
    with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
        doc = json.loads(resp.read())
    urls: list[str] = []
    for item in doc.get("items", []):
        ports = item.get("ports") or []
        chosen = next(
            (
                p
                for p in ports
                if (port is None and p.get("name") == "http")
                or (port is not None and str(port) in (str(p.get("name")), str(p.get("port"))))
            ),
            ports[0] if ports and port is None else None,
        )
        if chosen is None:
            continue
        for ep in item.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for addr in ep.get("addresses") or []:
                host = f"[{addr}]" if ":" in addr else addr
                urls.append(f"http://{host}:{chosen['port']}")
    if not urls:
        raise RuntimeError(
            f"Kubernetes Service {namespace}/{service} has no ready endpoint (EndpointSlices)"
        )
    return sorted(set(urls))


__all__ = [
    "Fleet",
    "FleetReading",
    "PrometheusFleet",
    "ScrapeFleet",
    "VersionTotals",
    "http_get",
    "kubernetes_replicas",
]
