"""The weekly report e-mail through Airflow's SMTP connection to a real SMTP server.

An aiosmtpd server on a free loopback port stores what it receives; the connection comes
from ``AIRFLOW_CONN_SMTP_DEFAULT`` (as outside a running task), with TLS and SSL disabled
through the hook's ``disable_tls`` / ``disable_ssl`` extras. The received bytes are parsed
back and checked part by part.
"""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from support.net import LOOPBACK, free_port
from support.report_data import full_data
from support.smtp import StoringHandler, smtp_sink

from ltr.online.mail import (
    MAX_MESSAGE_BYTES,
    ReportMailError,
    build_message,
    cid_references,
    send_via_airflow,
)
from ltr.online.report import ReportArtifacts, render_report

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SENDER = "ltr-reports@example.com"
RECIPIENTS = ["ranking-team@example.com", "Oncall <oncall@example.org>"]


@pytest.fixture
def airflow_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow as outside a task: its home in a temporary folder (so no metadata database
    with connections of its own), connections only from the environment."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    monkeypatch.delenv("_AIRFLOW_PROCESS_CONTEXT", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)


@pytest.fixture
def smtp_server(airflow_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoringHandler]:
    with smtp_sink(monkeypatch) as handler:
        yield handler


@pytest.fixture
def artifacts(tmp_path: Path) -> ReportArtifacts:
    return render_report(full_data(), tmp_path / "report")


def message(artifacts: ReportArtifacts) -> EmailMessage:
    return build_message(artifacts, sender=SENDER, recipients=RECIPIENTS)


def test_the_report_arrives_as_text_and_html_with_every_chart_inline(
    smtp_server: StoringHandler, artifacts: ReportArtifacts
) -> None:
    send_via_airflow(message(artifacts))

    assert len(smtp_server.messages) == 1
    got = smtp_server.messages[0]
    assert len(got.raw) < MAX_MESSAGE_BYTES
    assert got.mail_from == SENDER
    assert sorted(got.rcpt_tos) == ["oncall@example.org", "ranking-team@example.com"]

    parsed: Any = email.message_from_bytes(got.raw, policy=email.policy.default)
    assert parsed["Subject"] == artifacts.subject
    assert parsed["From"] == SENDER
    assert [a.addr_spec for a in parsed["To"].addresses] == [
        "ranking-team@example.com",
        "oncall@example.org",
    ]

    assert parsed.get_content_type() == "multipart/alternative"
    parts = parsed.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    plain, related = parts
    assert plain.get_content_type() == "text/plain"
    expected_text = artifacts.text_path.read_text(encoding="utf-8")
    assert plain.get_content().replace("\r\n", "\n") == expected_text
    assert related.get_content_type() == "multipart/related"

    html_part, *image_parts = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    html = html_part.get_content()
    references = cid_references(html)
    assert sorted(references) == sorted(artifacts.images)  # each chart shown once

    by_cid: dict[str, list[Any]] = {}
    for part in image_parts:
        by_cid.setdefault(part["Content-ID"], []).append(part)
    for name in references:
        matches = by_cid.get(f"<{name}>", [])
        assert len(matches) == 1, f"cid:{name} resolves to {len(matches)} parts"
        part = matches[0]
        assert part.get_content_type() == "image/png"
        assert part.get_content_disposition() == "inline"
        assert part.get_content() == artifacts.images[name].read_bytes()
        assert part.get_content().startswith(PNG_MAGIC)
    assert sorted(by_cid) == sorted(f"<{n}>" for n in references)  # and no part left over


def test_a_report_without_data_is_sent_too(smtp_server: StoringHandler, tmp_path: Path) -> None:
    empty = render_report({}, tmp_path / "empty")
    send_via_airflow(message(empty))
    parsed: Any = email.message_from_bytes(smtp_server.messages[0].raw, policy=email.policy.default)
    types = [p.get_content_type() for p in parsed.walk()]
    assert types == ["multipart/alternative", "text/plain", "multipart/related", "text/html"]
    assert "No data" in parsed.get_body(preferencelist=("html",)).get_content()


def test_a_missing_connection_names_the_conn_id_and_how_to_define_it(
    airflow_env: None, artifacts: ReportArtifacts
) -> None:
    with pytest.raises(ReportMailError, match="'smtp_default'") as info:
        send_via_airflow(message(artifacts))
    assert "AIRFLOW_CONN_SMTP_DEFAULT" in str(info.value)
    assert "airflow connections add" in str(info.value)

    conn_id = f"ltr_test_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ReportMailError, match=conn_id):
        send_via_airflow(message(artifacts), conn_id=conn_id)


def test_a_server_that_does_not_answer_is_a_report_mail_error(
    airflow_env: None, artifacts: ReportArtifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = {
        "conn_type": "smtp",
        "host": LOOPBACK,
        "port": free_port(),  # nothing listens there
        "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_REPORT_DEAD", json.dumps(connection))
    with pytest.raises(ReportMailError, match="'report_dead'"):
        send_via_airflow(message(artifacts), conn_id="report_dead")
