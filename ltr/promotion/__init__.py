"""Promotion of a model-store version to production: deploy -> shift -> observe -> decide.

The one public face of the promotion package, shared by ``ltr promote`` / ``ltr rollback``
and the promotion DAG (:mod:`ltr.pipelines.promotion`). Inside the package, each module has
one job and the imports run one way (``errors`` <- ``history``/``routing`` <- ``rollback``,
``plan`` <- ``fleet`` <- ``observation`` <- ``run`` <- ``resume``):

- :mod:`.errors`: the exceptions;
- :mod:`.history`: ``promotions.jsonl`` (the audit trail) and the model-store lock;
- :mod:`.routing`: artifact checks and what routing has in flight;
- :mod:`.rollback`: back to the previous production, and the registry alias;
- :mod:`.fleet`: the service's counters summed over every replica (scraped, or Prometheus);
- :mod:`.observation`: watching the fleet and the verdict on what was seen;
- :mod:`.plan`: what a promotion is asked to do (:class:`PromotionPlan`);
- :mod:`.eligibility`: only gated or registered versions, or an explicit recorded override;
- :mod:`.run`: the steps of a rollout;
- :mod:`.resume`: a rollout left behind by a promotion that died: its status, finishing it.

Import from ``ltr.promotion``; the submodules are not a contract.
"""

from __future__ import annotations

from ltr.promotion.errors import (
    ArtifactRejected,
    PromotionError,
    PromotionInProgress,
    PromotionPreempted,
)
from ltr.promotion.fleet import PrometheusFleet, ScrapeFleet, kubernetes_replicas
from ltr.promotion.history import HISTORY_FILE, LOCK_FILE, history, promotion_lock, record_step
from ltr.promotion.observation import (
    Fetch,
    Observation,
    fleet_for,
    judge,
    observe,
    quantile,
    wait_for_routing,
)
from ltr.promotion.plan import PromotionPlan
from ltr.promotion.resume import promotion_status, resume_promotion
from ltr.promotion.rollback import perform_rollback, registry_behind
from ltr.promotion.routing import verify_artifact, versions_in_flight
from ltr.promotion.run import (
    deploy,
    promote,
    rollback,
    run_promotion,
    shift_traffic,
)

__all__ = [
    "HISTORY_FILE",
    "LOCK_FILE",
    "ArtifactRejected",
    "Fetch",
    "Observation",
    "PrometheusFleet",
    "PromotionError",
    "PromotionInProgress",
    "PromotionPlan",
    "PromotionPreempted",
    "ScrapeFleet",
    "deploy",
    "fleet_for",
    "history",
    "judge",
    "kubernetes_replicas",
    "observe",
    "perform_rollback",
    "promote",
    "promotion_lock",
    "promotion_status",
    "quantile",
    "record_step",
    "registry_behind",
    "resume_promotion",
    "rollback",
    "run_promotion",
    "shift_traffic",
    "verify_artifact",
    "versions_in_flight",
    "wait_for_routing",
]
