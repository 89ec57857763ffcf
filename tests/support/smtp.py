"""A real SMTP server for the tests (aiosmtpd on a loopback port) that keeps what it
receives, and Airflow's ``smtp_default`` connection pointed at it (TLS and SSL off)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from support.net import LOOPBACK, free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes


@dataclass
class StoringHandler:
    """An aiosmtpd handler that keeps every message's envelope and raw bytes."""

    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def smtp_sink(
    monkeypatch: pytest.MonkeyPatch, conn_id: str = "smtp_default"
) -> Iterator[StoringHandler]:
    """The server, running, with ``AIRFLOW_CONN_<CONN_ID>`` naming it; stopped after."""
    handler = StoringHandler()
    port = free_port()
    controller = Controller(handler, hostname=LOOPBACK, port=port)
    controller.start()
    connection = {
        "conn_type": "smtp",
        "host": LOOPBACK,
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    try:
        yield handler
    finally:
        controller.stop()
