"""The demos: what ``ltr demo`` (``make demo``) and ``ltr demo --quick`` run.

- :mod:`.full`: the platform demo (pipeline config under ``LTR_HOME``, Feast, retrain and
  promotion DAGs, the service, the online loop);
- :mod:`.quick`: data -> two rankers -> comparison -> ONNX export, under ``<home>/quick``;
- :mod:`.service`: starting the rank service on a free port and querying it;
- :mod:`.online`: simulated users, the event drain and the weekly report.

Imports stay lazy (the CLI imports this package on every ``ltr`` call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ltr.demo.full import run_platform_demo
    from ltr.demo.quick import run_demo

__all__ = ["run_demo", "run_platform_demo"]


def __getattr__(name: str) -> Any:
    if name == "run_demo":
        from ltr.demo.quick import run_demo

        return run_demo
    if name == "run_platform_demo":
        from ltr.demo.full import run_platform_demo

        return run_platform_demo
    raise AttributeError(name)
