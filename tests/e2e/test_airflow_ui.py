"""The operator's Airflow in a real browser: Chromium (Debian's package) driven by Playwright.

One Airflow for the module, started the way ``make airflow`` starts it (``python -m
ltr.pipelines.airflow_dev``) on a free port with its home in a temporary ``LTR_HOME``: a model store
with v1 serving (and the registry champion) and v2 registered, the real rank service
answering traffic in this process, and one feature-pipeline run made beforehand with
``ltr pipeline run`` for a past day, as the demo makes them. Then, in order:

1. that run's start date is when it ran, not its logical date (the UI showed "330d");
2. log in through the form, open ``ltr_promotion``, fill its form, trigger, and watch the
   run page until the run succeeds; v2 then serves alone;
3. trigger ``ltr_feature_pipeline`` for a day from its form and watch it succeed; trigger
   it again for the day that already has a run and see the UI refuse it;
4. every socket the components listen on is on loopback (API server and log servers);
5. SIGTERM to the launcher stops every process of every component.

On a failure the page's screenshot goes to ``$LTR_UI_SCREENSHOTS`` (default
``var/ui-screenshots``) and its path is printed with the launcher's log. Timeouts here are
generous bounds for a loaded 2-core machine, never what a test asserts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.env import isolated_home
from support.models import export_tiny_mlp, register_versions
from support.net import free_port, wait_until
from support.service import LiveService, random_features, service_settings

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LTR_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("LTR_UI_SCREENSHOTS", REPO / "var" / "ui-screenshots"))
#: The day the demo-style run covers beforehand (no raw data: its tasks skip, it succeeds).
PAST_DAY = datetime(2026, 1, 2, tzinfo=UTC)
#: The day the UI triggers the feature pipeline for.
UI_DAY = datetime(2026, 1, 3, tzinfo=UTC)
START_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 300.0
TERMINAL = ("success", "failed")


def _need_browser() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")


# ----------------------------------------------------------------- Airflow for the module
@dataclass
class Airflow:
    base: str
    home: Path
    password: str
    launcher: subprocess.Popen[bytes]
    log: Path
    service_url: str
    before_past_run: datetime
    token: str = ""
    stopped: bool = field(default=False)

    def rest(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.base}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        return out

    def log_tail(self, n: int = 60) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def _token(base: str, password: str) -> str:
    req = urllib.request.Request(
        f"{base}/auth/token",
        data=json.dumps({"username": "admin", "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["access_token"])


def _clean_env() -> dict[str, str]:
    """This process's environment without any Airflow setting (the DAG tests set some)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}


def _stop(launcher: subprocess.Popen[bytes]) -> None:
    """Stop a launcher left running (a failed test): SIGTERM, then its components' groups."""
    import psutil

    if launcher.poll() is not None:
        return
    groups = set()
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(launcher.pid).children(recursive=True):
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                groups.add(os.getpgid(child.pid))
    launcher.send_signal(signal.SIGTERM)
    try:
        launcher.wait(timeout=90)
    except subprocess.TimeoutExpired:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        launcher.kill()
        launcher.wait(timeout=30)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    _need_browser()
    from ltr.model_store import serve_single
    from ltr.pipelines.airflow_dev import PASSWORD_FILE, airflow_env
    from ltr.pipelines.config import load_pipeline_config

    home = tmp_path_factory.mktemp("airflow_ui_home")
    with isolated_home(home, unset=("LTR_PIPELINE_CONFIG",)):
        models = home / "models"
        export_tiny_mlp(models, "v1", seed=1)
        export_tiny_mlp(models, "v2", seed=2)
        register_versions(
            models, ["v1", "v2"], name=load_pipeline_config().registry_name, champion="v1"
        )
        serve_single(models, "v1")
        port = free_port()
        env = airflow_env(port=port, parallelism=2, ltr_home=home, base=_clean_env())
        env.update(
            {
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONWARNINGS": "ignore",
            }
        )
        traffic = random_features(["f0", "f1", "f2", "f3"])
        with LiveService(service_settings(models), traffic) as live:
            # A run the way the demo makes them: a past logical date, run now (dag.test()).
            before = datetime.now(UTC)
            pre = subprocess.run(
                [sys.executable, "-m", "ltr.cli.main", "pipeline", "run", "ltr_feature_pipeline",
                 "--logical-date", PAST_DAY.isoformat(), "--json"],
                env=env, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            assert pre.returncode == 0, f"ltr pipeline run failed:\n{pre.stdout}\n{pre.stderr}"
            log = home / "airflow-launcher.log"
            with open(log, "wb") as out:
                launcher = subprocess.Popen(
                    [sys.executable, "-m", "ltr.pipelines.airflow_dev", "--port", str(port),
                     "--parallelism", "2", "--ltr-home", str(home)],
                    env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )  # fmt: skip
            password_file = home / "airflow" / PASSWORD_FILE
            af = Airflow(
                base=f"http://localhost:{port}",
                home=home,
                password="",
                launcher=launcher,
                log=log,
                service_url=live.url,
                before_past_run=before,
            )
            try:
                ready = wait_until(
                    lambda: launcher.poll() is not None or "Airflow is ready" in log.read_text(),
                    timeout=START_TIMEOUT_S,
                    step=1.0,
                )
                assert ready and launcher.poll() is None, (
                    f"Airflow did not start (launcher log {log}):\n{af.log_tail()}"
                )
                af.password = json.loads(password_file.read_text())["admin"]
                af.token = _token(af.base, af.password)
                for dag_id in ("ltr_promotion", "ltr_feature_pipeline"):
                    assert wait_until(lambda d=dag_id: _dag_parsed(af, d), 120, 1.0), dag_id
                yield af
            finally:
                _stop(launcher)


def _dag_parsed(af: Airflow, dag_id: str) -> bool:
    try:
        af.rest("GET", f"/api/v2/dags/{dag_id}")
        return True
    except urllib.error.HTTPError:
        return False


# ----------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser(airflow: Airflow) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        exe = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
        b = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def session_page(browser: Any, airflow: Airflow) -> Iterator[Any]:
    """One logged-in page for the module: the real login form, as an operator signs in."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{airflow.base}/")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    yield page
    context.close()


@pytest.fixture
def page(session_page: Any, airflow: Airflow, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The logged-in page; a screenshot of it when the test fails."""
    yield session_page
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / f"{request.node.name}.png"
        session_page.screenshot(path=str(shot), full_page=True)
        print(f"\nscreenshot of the failing page: {shot}\nlauncher log: {airflow.log}")
        print(airflow.log_tail(40))


def open_trigger_form(page: Any, airflow: Airflow, dag_id: str) -> Any:
    page.goto(f"{airflow.base}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    # the form's dialog, not the date picker's popover (also role "dialog", kept in the page
    # once opened)
    dialog = page.get_by_role("dialog").filter(has_text="Trigger Dag")
    dialog.get_by_text("Trigger Dag").first.wait_for()
    return dialog


def fill_param(page: Any, dialog: Any, key: str, spec: dict[str, Any], value: Any) -> None:
    """Set one field of the Params form, opening its section first; enum fields are chosen
    from their dropdown by the option's label."""
    schema = spec.get("schema") or {}
    section = schema.get("section") or "Run Parameters"
    target = dialog.locator(f'input[name="element_{key}"], input#element_{key}').first
    if schema.get("enum"):
        target = dialog.locator(f"#element_{key}").first
    if not target.is_visible():
        dialog.get_by_role("button", name=section).click()
    target.wait_for(state="visible")
    if schema.get("enum"):
        label = (schema.get("values_display") or {}).get(str(value), str(value))
        target.click()
        page.get_by_role("option", name=label).click()
    else:
        target.fill(str(value))


def set_logical_date(page: Any, dialog: Any, when: datetime) -> None:
    """The form's Logical Date: its picker's date and time fields (the UI's time zone is UTC)."""
    picker = dialog.locator('[data-testid="datetime-input"]').first
    picker.click()
    for placeholder, value in (("YYYY/MM/DD", f"{when:%Y/%m/%d}"), ("HH:mm", f"{when:%H:%M}")):
        box = page.get_by_placeholder(placeholder)
        box.fill(value)
        box.press("Tab")
    dialog.get_by_text("Logical Date").first.click()  # closes the picker, not the dialog
    assert picker.inner_text().strip() == f"{when:%b %d, %Y %H:%M}", picker.inner_text()


def submit(dialog: Any) -> None:
    button = dialog.locator('[data-testid="trigger-dag-submit"]')
    if not button.is_enabled():
        alerts = dialog.get_by_text(re.compile(r"required|must|invalid", re.I)).all_inner_texts()
        pytest.fail(f"the form's Trigger button stays disabled: {alerts or dialog.inner_text()}")
    button.click()


def wait_for_run_state(page: Any, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """The state badge beside the run's heading on its page, once the run finished (the page
    refreshes itself while the run is active; it is reloaded now and then all the same)."""
    badge = page.locator(
        f"xpath=//h2[normalize-space()='{run_id}']/following-sibling::*[@data-testid='state-badge']"
    ).first
    state, polls = "", 0

    def finished() -> bool:
        nonlocal state, polls
        polls += 1
        if polls % 10 == 0:
            page.reload()
        with contextlib.suppress(Exception):
            state = badge.inner_text(timeout=5_000).strip().lower()
        return state in TERMINAL

    wait_until(finished, timeout=timeout_s, step=2.0)
    return state


def run_id_from_url(page: Any, dag_id: str) -> str:
    page.wait_for_url(re.compile(rf"/dags/{dag_id}/runs/[^/?]+"))
    m = re.search(rf"/dags/{dag_id}/runs/([^/?#]+)", page.url)
    assert m is not None, page.url
    return urllib.request.unquote(m.group(1))


# ----------------------------------------------------------------- the tests (in order)
def test_a_run_of_a_past_day_starts_when_it_ran_not_at_its_logical_date(airflow: Airflow) -> None:
    (run,) = [r for r in airflow.runs("ltr_feature_pipeline") if r["logical_date"]]
    logical = datetime.fromisoformat(run["logical_date"])
    start = datetime.fromisoformat(run["start_date"])
    end = datetime.fromisoformat(run["end_date"])
    assert logical == PAST_DAY
    assert run["state"] == "success"
    # what the UI shows as the duration: end - start, no longer end - logical date ("330d")
    assert start >= airflow.before_past_run > logical
    assert end >= start


def test_promotion_from_the_form_runs_to_success_in_the_ui(page: Any, airflow: Airflow) -> None:
    from ltr.model_store import read_routing

    params = airflow.rest("GET", "/api/v2/dags/ltr_promotion/details")["params"]
    values: dict[str, Any] = {
        "model_version": "v2",
        "strategy": "canary",
        "canary_percent": 50,
        "observe_minutes": 0.1,
        "min_requests": 5,
        "max_error_rate": 0.05,
        "max_p99_ms": 2000,  # a loaded 2-core machine: this test is about the UI
        "service_url": airflow.service_url,
    }
    dialog = open_trigger_form(page, airflow, "ltr_promotion")
    for key, value in values.items():
        if key in params:
            fill_param(page, dialog, key, params[key], value)
    submit(dialog)
    run_id = run_id_from_url(page, "ltr_promotion")

    state = wait_for_run_state(page, run_id)

    tasks = {
        t["task_id"]: t["state"]
        for t in airflow.rest("GET", f"/api/v2/dags/ltr_promotion/dagRuns/{run_id}/taskInstances")[
            "task_instances"
        ]
    }
    assert state == "success", (run_id, tasks)
    assert tasks["promote"] == "success" and tasks["rollback"] == "skipped", tasks
    routing = read_routing(airflow.home / "models")
    assert routing is not None and routing["production"] == "v2", routing


def test_feature_pipeline_for_a_day_from_the_form(page: Any, airflow: Airflow) -> None:
    dialog = open_trigger_form(page, airflow, "ltr_feature_pipeline")
    set_logical_date(page, dialog, UI_DAY)
    submit(dialog)
    run_id = run_id_from_url(page, "ltr_feature_pipeline")

    state = wait_for_run_state(page, run_id)

    run = airflow.rest("GET", f"/api/v2/dags/ltr_feature_pipeline/dagRuns/{run_id}")
    tasks = {
        t["task_id"]: t["state"]
        for t in airflow.rest(
            "GET", f"/api/v2/dags/ltr_feature_pipeline/dagRuns/{run_id}/taskInstances"
        )["task_instances"]
    }
    assert state == "success", (run_id, tasks)
    assert datetime.fromisoformat(run["logical_date"]) == UI_DAY
    # no raw file landed for that day: find_raw looked for it and skipped the rest
    assert tasks["find_raw"] == "skipped", tasks


def test_a_day_that_already_has_a_run_is_refused_by_the_form(page: Any, airflow: Airflow) -> None:
    before = [r["dag_run_id"] for r in airflow.runs("ltr_feature_pipeline")]
    dialog = open_trigger_form(page, airflow, "ltr_feature_pipeline")
    set_logical_date(page, dialog, PAST_DAY)
    submit(dialog)

    # Airflow's own answer (a 409, "Unique constraint violation"): the form stays open
    dialog.locator('[data-testid="error-alert"]').first.wait_for(state="visible")
    assert dialog.is_visible()
    assert [r["dag_run_id"] for r in airflow.runs("ltr_feature_pipeline")] == before


def test_everything_listens_on_loopback_only(airflow: Airflow) -> None:
    import psutil

    pids = {p.pid for p in psutil.Process(airflow.launcher.pid).children(recursive=True)}
    listening = [
        c
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    ports = {c.laddr.port for c in listening}
    expected = {
        int(airflow.base.rsplit(":", 1)[1]),
        *(int(p) for p in _log_server_ports(airflow)),
    }
    assert expected <= ports, (expected, listening)
    assert {c.laddr.ip for c in listening} <= {"127.0.0.1", "::1"}, listening


def _log_server_ports(airflow: Airflow) -> list[str]:
    found = re.findall(r"Uvicorn running on http://[^:]+:(\d+)", airflow.log.read_text())
    return [p for p in found if p != airflow.base.rsplit(":", 1)[1]]


def test_sigterm_to_the_launcher_stops_every_component(airflow: Airflow) -> None:
    """The last test: it stops the module's Airflow."""
    import psutil

    children = psutil.Process(airflow.launcher.pid).children(recursive=True)
    groups = {os.getpgid(p.pid) for p in children}
    names = " ".join(" ".join(p.cmdline()) for p in children)
    assert "--component scheduler" in names and "api_server" in names, names

    airflow.launcher.send_signal(signal.SIGTERM)
    code = airflow.launcher.wait(timeout=120)

    assert code == 0, airflow.log_tail()
    left = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) in groups:
                left.append(proc.info)
    assert left == [], left
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert "every component has stopped" in airflow.log.read_text()
