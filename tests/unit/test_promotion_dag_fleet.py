"""The promotion DAG observes the fleet named in the pipeline config, as ``ltr promote`` does."""

from __future__ import annotations

import pytest

from ltr.pipelines.config import PromotionDefaults
from ltr.pipelines.promotion import plan_from_params
from ltr.promotion.fleet import PrometheusFleet, ScrapeFleet
from ltr.promotion.observation import fleet_for

REPLICAS = ("http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000")


def test_the_dag_plan_reads_every_replica_listed_in_the_pipeline_config(monkeypatch):
    monkeypatch.delenv("LTR_SERVICE_URL", raising=False)
    plan = plan_from_params({"model_version": "v2"}, PromotionDefaults(replica_urls=REPLICAS))
    assert plan.replica_urls == REPLICAS and plan.observes
    fleet = fleet_for(plan)
    assert isinstance(fleet, ScrapeFleet)


def test_a_prometheus_url_in_the_pipeline_config_is_preferred(monkeypatch):
    monkeypatch.delenv("LTR_SERVICE_URL", raising=False)
    defaults = PromotionDefaults(
        replica_urls=REPLICAS,
        prometheus_url="http://prometheus:9090",
        prometheus_selector='namespace="ltr"',
        service_url="http://ltr-serving:8000",
    )
    plan = plan_from_params({"model_version": "v2"}, defaults)
    assert isinstance(fleet_for(plan), PrometheusFleet)
    assert plan.prometheus_selector == 'namespace="ltr"'


def test_without_any_source_the_plan_cannot_observe(monkeypatch):
    monkeypatch.delenv("LTR_SERVICE_URL", raising=False)
    plan = plan_from_params({"model_version": "v2"}, PromotionDefaults())
    assert not plan.observes
    with pytest.raises(ValueError, match="--replica"):
        fleet_for(plan)
