"""``make airflow``: Airflow's components for development, on loopback, stopped as one.

``python -m ltr.pipelines.airflow_dev [--port 8080] [--parallelism 4]`` does what ``airflow
standalone`` does (migrate the metadata database, then the scheduler, the DAG processor,
the triggerer and the API server, their output prefixed with their name, the admin
password from the simple auth manager) with three differences that standalone cannot be
configured into:

- **Every process stops with the launcher.** Each component runs in its own process group
  (with the processes it starts: LocalExecutor workers, task supervisors, log servers,
  API server workers). SIGTERM, SIGINT (Ctrl-C) or SIGHUP to the launcher sends SIGTERM to
  every group, waits until no process of them is left (SIGKILL after a grace period) and
  only then exits. ``airflow standalone`` handles only Ctrl-C: on SIGTERM it died alone and
  left the scheduler and the API server running.
- **Nothing listens beyond loopback.** Airflow 3.3 binds the log servers of the scheduler
  and the triggerer (``[logging] worker_log_server_port`` 8793, ``trigger_log_server_port``
  8794) to every interface, with no setting for the host. Here they run on
  ``LTR_AIRFLOW_LOG_SERVER_HOST`` (default 127.0.0.1), the hostname recorded for tasks is
  ``localhost`` (so the API server fetches running tasks' logs from there), and the API
  server and the scheduler's health check listen on 127.0.0.1 too.
- **The component that dies is named**: if one exits on its own, the launcher says which
  and with what status, stops the others and exits non-zero.

The layout is the repository's (see docs/airflow.md): ``AIRFLOW_HOME`` under ``LTR_HOME``,
the ``dags/`` folder, no examples, the LocalExecutor. ``AIRFLOW__*`` variables already set
win over these defaults, except the API server's host and port, which are the options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

MODULE = "ltr.pipelines.airflow_dev"  # not __name__, which is "__main__" under -m
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
LOG_SERVER_HOST_VAR = "LTR_AIRFLOW_LOG_SERVER_HOST"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
#: How long the components get to stop after SIGTERM before they are killed.
STOP_GRACE_S = 30.0


def loopback_hostname() -> str:
    """``[core] hostname_callable``: the name tasks and triggerers record as their host."""
    return "localhost"


def airflow_env(
    *, port: int, parallelism: int, ltr_home: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of every component (``base``: the caller's, default ``os.environ``)."""
    from ltr.pipelines.config import REPO_ROOT

    env = dict(os.environ if base is None else base)
    home = ltr_home.resolve()
    venv_bin = str(Path(sys.executable).parent)
    defaults = {
        "LTR_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{MODULE}.loopback_hostname",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        LOG_SERVER_HOST_VAR: "127.0.0.1",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    env.update(
        {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            # the components are started as `airflow ...` by Airflow itself at times
            "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
        }
    )
    return env


# ------------------------------------------------------------------ one component
def _serve_logs_on_host(port: int | None = None) -> None:
    """Airflow's ``serve_logs`` on ``LTR_AIRFLOW_LOG_SERVER_HOST`` instead of every interface."""
    import uvicorn
    from airflow.utils.serve_logs import core

    host = os.environ.get(LOG_SERVER_HOST_VAR, "127.0.0.1")
    real_run = uvicorn.run

    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs["host"] = host
        return real_run(*args, **kwargs)

    core.uvicorn.run = run  # type: ignore[attr-defined]  # this process only: the log server
    core.serve_logs(port)  # type: ignore[no-untyped-call]


def run_component(name: str) -> None:
    """``airflow <name>``, with the log server (scheduler, triggerer) bound to the host above.

    Airflow imports ``serve_logs`` from ``airflow.utils.serve_logs`` when the component
    starts it (in a child process), so replacing that attribute first is enough.
    """
    import airflow.utils.serve_logs as serve_logs_pkg
    from airflow.__main__ import main

    serve_logs_pkg.serve_logs = _serve_logs_on_host
    sys.argv = ["airflow", name]
    main()  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------ the launcher
def _alive_in_groups(pgids: set[int]) -> list[Any]:
    """Processes (not zombies) whose process group is one of ``pgids``."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) in pgids:
                out.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


class Launcher:
    """The components as child processes, each the leader of its own process group."""

    def __init__(self, env: dict[str, str], out: IO[str] | None = None) -> None:
        self.env = env
        self.out = out or sys.stdout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stop_requested = threading.Event()
        self.stop_signal: int | None = None
        self._lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        with self._lock:
            self.out.write(f"{name:13} | {line}\n")
            self.out.flush()

    @property
    def port(self) -> int:
        return int(self.env["AIRFLOW__API__PORT"])

    @property
    def password_file(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"]) / PASSWORD_FILE

    def migrate(self) -> None:
        self.say("launcher", "migrating the metadata database (airflow db migrate)")
        Path(self.env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {(out.stderr or out.stdout)[-2000:]}")

    def start(self) -> None:
        for name in COMPONENTS:
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, "--component", name],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as a whole
            )
            self.procs[name] = proc
            threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()
            self.say("launcher", f"{name} started (pid {proc.pid}, process group {proc.pid})")

    def _pump(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.say(name, raw.decode("utf-8", "replace").rstrip())

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}/api/v2/monitor/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def ready(self) -> bool:
        body = self.health()
        if not body:
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((body.get(p) or {}).get("status") == "healthy" for p in parts)

    def banner(self) -> None:
        self.say("launcher", "")
        self.say("launcher", f"Airflow is ready: http://localhost:{self.port}")
        self.say("launcher", f"  user admin, password in {self.password_file}")
        self.say("launcher", "  Ctrl-C (or SIGTERM to this process) stops every component")
        self.say("launcher", "")

    def exited(self) -> tuple[str, int] | None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, grace_s: float = STOP_GRACE_S) -> list[int]:
        """SIGTERM to every component's process group; wait until none of their processes
        is left, SIGKILL what remains after ``grace_s``. Returns the pids killed."""
        pgids = {p.pid for p in self.procs.values()}
        for pgid in pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            for proc in self.procs.values():
                proc.poll()  # reap our direct children
            if not _alive_in_groups(pgids):
                return []
            time.sleep(0.2)
        killed = []
        for proc in _alive_in_groups(pgids):
            with contextlib.suppress(Exception):
                proc.kill()
                killed.append(proc.pid)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        return killed

    def request_stop(self, signum: int, _frame: Any = None) -> None:
        self.stop_signal = signum
        self.stop_requested.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.request_stop)
        # `make airflow` execs this process, so its parent is make: a SIGTERM to make alone
        # (not to the process group) kills make without telling us; being re-parented is the
        # sign to stop everything too
        parent = os.getppid()
        code = 0
        try:
            self.migrate()
            if not self.stop_requested.is_set():
                self.start()
            shown = False
            while not self.stop_requested.wait(0.5):
                if os.getppid() != parent:
                    self.say("launcher", f"parent process {parent} exited: stopping all")
                    break
                dead = self.exited()
                if dead is not None:
                    self.say("launcher", f"{dead[0]} exited with status {dead[1]}: stopping all")
                    code = 1
                    break
                if not shown and self.ready():
                    self.banner()
                    shown = True
        except RuntimeError as exc:
            self.say("launcher", str(exc))
            code = 1
        finally:
            if self.stop_signal is not None:
                self.say("launcher", f"{signal.Signals(self.stop_signal).name}: stopping")
            killed = self.stop()
            if killed:
                self.say("launcher", f"killed after {STOP_GRACE_S:.0f} s: pids {killed}")
            self.say("launcher", "every component has stopped")
        return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ltr.pipelines.airflow_dev", description=__doc__
    )
    parser.add_argument("--port", type=int, default=8080, help="API server (UI) port")
    parser.add_argument("--parallelism", type=int, default=4, help="task slots")
    parser.add_argument("--ltr-home", type=Path, default=None, help="default: $LTR_HOME or var")
    parser.add_argument("--component", choices=COMPONENTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.component:
        run_component(args.component)
        return 0
    home = args.ltr_home or Path(os.environ.get("LTR_HOME") or "var")
    env = airflow_env(port=args.port, parallelism=args.parallelism, ltr_home=home)
    return Launcher(env).run()


if __name__ == "__main__":
    sys.exit(main())
