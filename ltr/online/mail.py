"""The weekly report as an e-mail: one self-contained MIME message, sent through Airflow.

The message (:func:`build_message`) is::

    multipart/alternative
    ├── text/plain                 report.txt
    └── multipart/related
        ├── text/html              report.html with cid:<name> image sources
        └── image/png  (inline)    one per chart, Content-ID: <name>

so a client that shows HTML shows the charts inline, without fetching anything, and one
that does not shows the text. :func:`send_via_airflow` hands the finished message to the
SMTP client of Airflow's ``SmtpHook``, so host, port, TLS/SSL and login follow the Airflow
connection; :func:`write_eml` saves it instead when no mail server is configured.
"""

from __future__ import annotations

import contextlib
import email.policy
import email.utils
import logging
import os
import re
import smtplib
from collections.abc import Iterable
from email.message import EmailMessage
from pathlib import Path
from typing import cast

from ltr.online.report import ReportArtifacts, email_html
from ltr.online.report_view import text as one_line
from ltr.utils.io import atomic_open

log = logging.getLogger(__name__)

#: Largest message accepted, in bytes as sent: mail servers and clients deal badly with more.
MAX_MESSAGE_BYTES = 1_000_000
DEFAULT_CONN_ID = "smtp_default"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_CID_REF = re.compile(r"""\bcid:([^"'\s>)]+)""")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ReportMailError(RuntimeError):
    """The report could not be mailed: no usable SMTP connection, or the server refused it."""


def _address(value: str, what: str) -> str:
    address = value.strip() if isinstance(value, str) else ""
    _, parsed = email.utils.parseaddr(address)
    if not address or _CONTROL.search(address) or "@" not in parsed:
        raise ValueError(f"{what} {value!r} is not an e-mail address")
    return address


def _recipients(recipients: str | Iterable[str]) -> list[str]:
    items = [recipients] if isinstance(recipients, str) else list(recipients)
    if not items:
        raise ValueError("no recipients: give at least one address to send the report to")
    return [_address(r, "recipient") for r in items]


def cid_references(html: str) -> list[str]:
    """The Content-IDs an HTML document references (``cid:<name>``), in order, repeated."""
    return _CID_REF.findall(html)


def build_message(
    artifacts: ReportArtifacts,
    *,
    sender: str,
    recipients: str | Iterable[str],
    subject: str | None = None,
) -> EmailMessage:
    """The report as a ``multipart/alternative`` message (see the module docstring).

    Raises ``ValueError`` for no recipients or a malformed address, for an image referenced
    by the HTML without a part (or a part the HTML does not reference), for an image that is
    not a PNG, and for a message over :data:`MAX_MESSAGE_BYTES`.
    """
    to = _recipients(recipients)
    html = email_html(artifacts)
    referenced = set(cid_references(html))
    missing = sorted(referenced - set(artifacts.images))
    unused = sorted(set(artifacts.images) - referenced)
    if missing or unused:
        raise ValueError(
            f"HTML and images disagree: cid references without an image {missing}, "
            f"images the HTML does not show {unused}"
        )

    msg = EmailMessage(policy=email.policy.SMTP)
    # Header values are single lines: a newline in a subject would start a new header.
    msg["Subject"] = one_line(subject or artifacts.subject, 250) or ""
    msg["From"] = _address(sender, "sender")
    msg["To"] = ", ".join(to)
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain="ltr-platform.local")
    msg.set_content(artifacts.text_path.read_text(encoding="utf-8"), subtype="plain")
    msg.add_alternative(html, subtype="html")
    html_part = cast(EmailMessage, msg.get_payload()[1])  # type: ignore[index]
    html_part.make_related()  # multipart/related even without images: one shape for readers
    for name, path in artifacts.images.items():
        data = path.read_bytes()
        if not data.startswith(PNG_MAGIC):
            raise ValueError(f"chart {name!r} at {path} is not a PNG")
        # add_related turns the text/html part into multipart/related [html, images...]
        html_part.add_related(
            data,
            maintype="image",
            subtype="png",
            cid=f"<{name}>",
            disposition="inline",
            filename=path.name,
        )

    size = len(msg.as_bytes())
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"the report e-mail is {size:,} bytes, over the {MAX_MESSAGE_BYTES:,}-byte limit; "
            f"the images are {sum(p.stat().st_size for p in artifacts.images.values()):,} bytes"
        )
    log.info(
        "report e-mail built: %d bytes, %d images, %d recipients",
        size,
        len(artifacts.images),
        len(to),
    )
    return msg


def write_eml(message: EmailMessage, path: str | os.PathLike[str]) -> Path:
    """Save ``message`` as an ``.eml`` file (atomically) that mail clients open as is."""
    target = Path(path)
    with atomic_open(target, "wb") as fh:
        fh.write(message.as_bytes(policy=email.policy.SMTP))
    return target


def _missing_connection(conn_id: str) -> ReportMailError:
    var = f"AIRFLOW_CONN_{conn_id.upper()}"
    return ReportMailError(
        f"no Airflow connection {conn_id!r} to send the report through. Define it, e.g. "
        f"""{var}='{{"conn_type": "smtp", "host": "mail.example.com", "port": 587, """
        f""""login": "...", "password": "..."}}' (extras: "disable_tls": true for a server """
        f"""without STARTTLS, "disable_ssl": false for SMTPS on 465, "timeout": 30), or """
        f"`airflow connections add {conn_id} --conn-type smtp --conn-host HOST --conn-port PORT`"
        f" (or write the message to a file with write_eml instead)"
    )


def send_via_airflow(message: EmailMessage, *, conn_id: str = DEFAULT_CONN_ID) -> None:
    """Send ``message`` as built through the Airflow SMTP connection ``conn_id``.

    Works in a task and outside one (a connection in an ``AIRFLOW_CONN_<ID>`` variable).
    Raises :class:`ReportMailError` when the connection is not defined, the server cannot
    be reached, or it refuses every recipient; recipients refused among others are logged.
    """
    from airflow.providers.common.compat.sdk import AirflowException, AirflowNotFoundException
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    try:
        # The hook would hide the conn_id behind "SMTP connection is not found."
        SmtpHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise _missing_connection(conn_id) from exc

    hook = SmtpHook(smtp_conn_id=conn_id)
    try:
        with hook:
            client = hook._smtp_client  # the hook exposes its smtplib client only here
            if not isinstance(client, smtplib.SMTP):
                raise ReportMailError(f"connection {conn_id!r} gave no SMTP client")
            refused = client.send_message(message)
            # Sent: a failing goodbye must not fail (and so retry, and duplicate) the send.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
    except ReportMailError:
        raise
    except (smtplib.SMTPException, OSError, AirflowException) as exc:
        where = f"{hook.host}:{hook.port}" if hook.smtp_connection is not None else "?"
        raise ReportMailError(
            f"sending the report through connection {conn_id!r} ({where}) failed: {exc}"
        ) from exc
    if refused:
        log.warning("report e-mail: the server refused %s", sorted(refused))
    log.info("report e-mail %r sent through %s", message["Subject"], conn_id)
