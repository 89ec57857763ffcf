"""Prometheus metrics of the rank service, on a registry of its own per app instance."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 0.5 ms .. 1 s: the rank path is expected in the low milliseconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


@dataclass
class Telemetry:
    registry: CollectorRegistry
    request_latency: Histogram
    stage_latency: Histogram
    requests: Counter
    cache: Counter
    feature_misses: Counter
    errors: Counter
    unknown_features: Counter
    reloads: Counter
    refused_versions: Counter
    shadow: Counter
    models_loaded: Gauge
    candidates: Histogram
    model_requests: Counter
    model_latency: Histogram
    routing_version: Gauge
    rollout_started: Gauge
    rollout_deadline: Gauge


def create_telemetry() -> Telemetry:
    reg = CollectorRegistry(auto_describe=True)
    return Telemetry(
        registry=reg,
        request_latency=Histogram(
            "ltr_request_latency_seconds",
            "End-to-end latency of API requests",
            ["endpoint", "model_version", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        ),
        stage_latency=Histogram(
            "ltr_stage_latency_seconds",
            "Latency of the stages of a rank request",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        ),
        requests=Counter(
            "ltr_requests",
            "Requests by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=reg,
        ),
        cache=Counter("ltr_cache", "Result cache lookups", ["result"], registry=reg),
        feature_misses=Counter(
            "ltr_feature_misses",
            "Missing features replaced by their defaults: candidate rows per feature view, "
            'and values of request-sourced features (view="request")',
            ["view"],
            registry=reg,
        ),
        errors=Counter("ltr_errors", "Errors by kind", ["kind"], registry=reg),
        unknown_features=Counter(
            "ltr_unknown_request_features",
            "Request-supplied feature names that the model's schema does not have",
            registry=reg,
        ),
        reloads=Counter("ltr_model_reloads", "Model store reloads", ["result"], registry=reg),
        refused_versions=Counter(
            "ltr_model_versions_refused",
            "Model versions refused (missing, corrupt or unloadable artifact), by version",
            ["version"],
            registry=reg,
        ),
        shadow=Counter("ltr_shadow_scores", "Shadow scorings", ["version", "result"], registry=reg),
        models_loaded=Gauge("ltr_models_loaded", "Model versions loaded", registry=reg),
        candidates=Histogram(
            "ltr_candidates_per_request",
            "Candidates per rank request",
            buckets=(1, 10, 25, 50, 100, 200, 500, 1000, 5000),
            registry=reg,
        ),
        # What a promotion judges, summed over replicas by Prometheus or by the scraper of
        # ltr.promotion: every rank (and batch item) a version handled, by outcome
        # (ok, client_error = a 4xx, server_error = a 5xx), and the latency of all of them.
        model_requests=Counter(
            "ltr_model_requests",
            "Rank requests (and batch items) handled by each model version, by outcome",
            ["model_version", "outcome"],
            registry=reg,
        ),
        model_latency=Histogram(
            "ltr_model_latency_seconds",
            "Latency of every rank request a model version handled, failed ones included",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        ),
        routing_version=Gauge(
            "ltr_routing_version", "Version of the routing.json in force", registry=reg
        ),
        rollout_started=Gauge(
            "ltr_rollout_started_timestamp_seconds",
            "Start (Unix time) of the rollout routing.json names, by version being rolled out",
            ["version"],
            registry=reg,
        ),
        rollout_deadline=Gauge(
            "ltr_rollout_deadline_timestamp_seconds",
            "When (Unix time) the rollout routing.json names should have been decided",
            ["version"],
            registry=reg,
        ),
    )
