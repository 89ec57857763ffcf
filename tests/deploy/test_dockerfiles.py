"""Checks of ``platform/docker/*.Dockerfile`` without a Docker engine: the files are parsed
instruction by instruction (continuation lines joined, comments dropped) and checked against
the repository (COPY sources, pyproject extras, .dockerignore). Each check returns a list of
problems and is shown to fail on a broken example in the same test.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "platform" / "docker"
SERVING = DOCKER / "serving.Dockerfile"
PIPELINES = DOCKER / "pipelines.Dockerfile"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.IGNORECASE)
SERVING_CMD = [
    "uvicorn",
    "serving.main:create_app",
    "--factory",
    "--host",
    "0.0.0.0",
    "--port",
    "8000",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
]

Instruction = tuple[str, str]


def parse(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs, in order."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    if pending:
        raise ValueError("dangling line continuation")
    return out


def _words(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def _copy_sources(args: str) -> list[str]:
    words = [w for w in _words(args) if not w.startswith("--")]
    return words[:-1]


def structure_problems(instructions: list[Instruction]) -> list[str]:
    problems = []
    keywords = [k for k, _ in instructions]
    first = next((k for k in keywords if k != "ARG"), None)
    if first != "FROM":
        problems.append("FROM is not the first instruction")
    if "CMD" not in keywords:
        problems.append("no CMD")
    else:
        users = [a for k, a in instructions[: keywords.index("CMD")] if k == "USER"]
        if not users:
            problems.append("no USER before CMD")
        elif users[-1].split(":")[0] in {"root", "0"}:
            problems.append(f"USER {users[-1]} is root")
    for keyword, args in instructions:
        if keyword == "ADD" and re.search(r"\bhttps?://", args):
            problems.append(f"ADD of a URL: {args}")
        if keyword in {"ENV", "ARG"}:
            for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)[= ]", args + " "):
                if SECRET_NAME.search(name):
                    problems.append(f"{keyword} {name} looks like a secret")
    return problems


def _ignored(source: str, patterns: list[str]) -> bool:
    top = source.strip("/").split("/")[0]
    return any(fnmatch.fnmatch(top, p) or fnmatch.fnmatch(source.strip("/"), p) for p in patterns)


def copy_problems(instructions: list[Instruction]) -> list[str]:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    problems = []
    for keyword, args in instructions:
        if keyword != "COPY" or "--from=" in args:
            continue
        for source in _copy_sources(args):
            if not list(ROOT.glob(source.rstrip("/"))):
                problems.append(f"COPY source {source} does not exist")
            elif _ignored(source, ignore):
                problems.append(f"COPY source {source} is excluded by .dockerignore")
    return problems


def _pyproject_extras() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]


def install_problems(instructions: list[Instruction]) -> list[str]:
    extras = _pyproject_extras()
    problems = []
    installs = [a for k, a in instructions if k == "RUN" and "pip install" in a]
    if not installs:
        problems.append("no pip install")
    for args in installs:
        if "-c requirements/constraints.txt" not in args:
            problems.append("pip install without -c requirements/constraints.txt")
        for group in re.findall(r"\.\[([^\]]+)\]", args):
            for extra in group.split(","):
                if extra.strip() not in extras:
                    problems.append(f"extra {extra.strip()} is not in pyproject.toml")
    return problems


def _extras_installed(instructions: list[Instruction]) -> set[str]:
    return {
        extra.strip()
        for k, a in instructions
        if k == "RUN"
        for group in re.findall(r"\.\[([^\]]+)\]", a)
        for extra in group.split(",")
    }


@pytest.mark.parametrize("path", [SERVING, PIPELINES], ids=lambda p: p.name)
def test_dockerfile_structure_sources_and_extras(path: Path) -> None:
    instructions = parse(path.read_text())
    assert structure_problems(instructions) == []
    assert copy_problems(instructions) == []
    assert install_problems(instructions) == []
    assert [a for k, a in instructions if k == "FROM"] == ["python:3.11-slim"]


def test_checks_fail_on_a_broken_dockerfile() -> None:
    broken = parse(
        "ENV LTR_API_KEY=abc PATH=/x\n"
        "FROM python:3.11-slim\n"
        "ADD https://example.com/x.tgz /x\n"
        "COPY missing_dir/ ./\n"
        "COPY .venv/ .venv/\n"
        "RUN pip install '.[serving,gpu]'\n"
        "USER root\n"
        'CMD ["true"]\n'
    )
    assert len(structure_problems(broken)) == 4  # FROM order, USER root, ADD URL, ENV secret
    assert copy_problems(broken) == [
        "COPY source missing_dir/ does not exist",
        "COPY source .venv/ is excluded by .dockerignore",
    ]
    assert install_problems(broken) == [
        "pip install without -c requirements/constraints.txt",
        "extra gpu is not in pyproject.toml",
    ]
    assert structure_problems(parse("FROM x\nUSER 1000\n")) == ["no CMD"]
    assert structure_problems(parse('FROM x\nCMD ["a"]\nUSER 1000\n')) == ["no USER before CMD"]


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = '# c\nFROM a\nRUN one \\\n    # inner comment\n    two\nCMD ["x"]\n'
    assert parse(text) == [("FROM", "a"), ("RUN", "one two"), ("CMD", '["x"]')]
    with pytest.raises(ValueError):
        parse("RUN a \\\n")


def test_serving_image_port_command_and_healthcheck() -> None:
    instructions = parse(SERVING.read_text())
    args = dict(instructions)
    assert args["EXPOSE"] == "8000"
    cmd = json.loads(args["CMD"])
    assert cmd == SERVING_CMD
    assert cmd[cmd.index("--port") + 1] == args["EXPOSE"]
    assert "/health" in args["HEALTHCHECK"] and ":8000/" in args["HEALTHCHECK"]
    copied = {s.rstrip("/") for k, a in instructions if k == "COPY" for s in _copy_sources(a)}
    assert {"ltr", "serving", "pyproject.toml"} <= copied
    assert _extras_installed(instructions) == {"serving"}


def test_serving_extra_does_not_pull_torch() -> None:
    extras = _pyproject_extras()

    def torch_free(names: set[str]) -> bool:
        reqs = [r for n in names for r in extras[n]]
        return not any(re.match(r"torch\b", r) for r in reqs)

    assert torch_free(_extras_installed(parse(SERVING.read_text())))
    assert not torch_free({"serving", "training"})


def test_no_image_installs_the_deploy_checks() -> None:
    """The ``deploy`` extra (Helm's SDK, Kubernetes schemas: tens of MB) is for tests only."""
    extras = _pyproject_extras()
    deploy = {re.split(r"[<>=\[ ]", r)[0] for r in extras["deploy"]}
    assert {"helm-python-sdk", "kubernetes-validate", "check-jsonschema"} <= deploy
    for path in (SERVING, PIPELINES):
        installed = _extras_installed(parse(path.read_text()))
        assert "deploy" not in installed, path.name
        reqs = {re.split(r"[<>=\[ ]", r)[0] for n in installed for r in extras[n]}
        assert reqs.isdisjoint(deploy), path.name
    assert "deploy" in _extras_installed(parse("RUN pip install -c x '.[serving,deploy]'\n"))


def test_pipelines_image_copies_dags_configs_feature_repo_with_cpu_torch_note() -> None:
    text = PIPELINES.read_text()
    instructions = parse(text)
    copied = {s.rstrip("/") for k, a in instructions if k == "COPY" for s in _copy_sources(a)}
    assert {"dags", "configs", "feature_repo", "ltr"} <= copied
    assert _extras_installed(instructions) == {"training", "orchestration"}
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    constraints = (ROOT / "requirements/constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in constraints
