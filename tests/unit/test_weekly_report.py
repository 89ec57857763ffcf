"""The weekly online-metrics report: files, charts, escaping, no-data sections, atomic writes,
and the e-mail built from it (structure and refusals; sending is in
tests/integration/test_report_mail.py)."""

from __future__ import annotations

import copy
import dataclasses
import email
import email.policy
import importlib.resources
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import matplotlib
import pytest
from support.report_data import full_data

from ltr.online.mail import MAX_MESSAGE_BYTES, build_message, cid_references, write_eml
from ltr.online.report import ReportArtifacts, email_html, render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_CHARTS = {"variants", "latency", "trend", "offline-online", "interleaving"}
HOSTILE = "<script>alert(1)</script>"


def no_data() -> dict[str, Any]:
    """A week without traffic: every section present but empty."""
    return {
        "week": {"start": "2026-01-05", "end": "2026-01-12"},
        "generated_at": "2026-01-12T06:00:00+00:00",
        "variants": [],
        "trend": [],
        "offline_vs_online": [],
        "interleaving": None,
        "ab": None,
        "decision": None,
        "events": None,
    }


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ------------------------------------------------------------------------------ files
def test_a_full_week_writes_html_text_json_and_one_png_per_chart(tmp_path: Path) -> None:
    art = render_report(full_data(), tmp_path)

    assert set(art.images) == ALL_CHARTS
    assert files_in(tmp_path) == {"report.html", "report.json", "report.txt"} | {
        f"{name}.png" for name in ALL_CHARTS
    }
    for name, path in art.images.items():
        assert path.parent == tmp_path and path.name == f"{name}.png"
        assert path.read_bytes().startswith(PNG_MAGIC)
        assert path.stat().st_size < 100_000  # small charts: the whole mail stays far below 1 MB
        assert re.fullmatch(r"[a-z0-9-]+", name)  # a Content-ID and a file stem as is


def test_the_saved_html_references_each_chart_by_its_relative_file_name(tmp_path: Path) -> None:
    art = render_report(full_data(), tmp_path)
    sources = re.findall(r'<img src="([^"]+)"', art.html_path.read_text(encoding="utf-8"))
    assert sorted(sources) == sorted(f"{name}.png" for name in art.images)
    assert all((tmp_path / src).is_file() for src in sources)


def test_the_report_shows_the_numbers_it_was_given(tmp_path: Path) -> None:
    art = render_report(full_data(), tmp_path)
    html = art.html_path.read_text(encoding="utf-8")
    text = art.text_path.read_text(encoding="utf-8")
    for doc in (html, text):
        assert "2026-01-05" in doc and "2026-01-11" in doc  # the last day covered, end exclusive
        assert "0.660" in doc  # v2's CTR@10
        assert "+0.060" in doc and "[+0.030, +0.090]" in doc  # the interleaving preference
        assert "promote b" in doc
        assert "3,200 impressions" in doc
    assert "No data" not in html and "No data" not in text
    assert art.subject == "[LTR] Weekly online metrics 2026-01-05 to 2026-01-11: promote_b (v2)"


def test_the_interleaving_winner_is_named_by_its_model_version(tmp_path: Path) -> None:
    art = render_report(full_data(), tmp_path)
    assert re.search(
        r"winner v2\b", art.text_path.read_text(encoding="utf-8").split("INTERLEAVING")[1]
    )


# ------------------------------------------------------------------------------ no data
@pytest.mark.parametrize("data", [no_data(), {}], ids=["empty-sections", "empty-dict"])
def test_a_week_without_data_says_no_data_and_draws_no_chart(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    art = render_report(data, tmp_path)

    assert art.images == {}
    assert files_in(tmp_path) == {"report.html", "report.json", "report.txt"}
    html = art.html_path.read_text(encoding="utf-8")
    text = art.text_path.read_text(encoding="utf-8")
    assert "<img" not in html
    assert html.count("No data") >= 6 and text.count("No data") >= 6
    assert "No decision this week" in html and "No decision this week" in text
    assert "no decision" in art.subject


def _partial() -> dict[str, Any]:
    data = full_data()
    data["variants"][0].update(mrr=None, ctr_at={}, latency_p99_ms=None, error_rate=float("nan"))
    data["variants"][1].update(ctr_at=None, impressions="many")
    data["offline_vs_online"][0]["offline_ndcg_at_10"] = None
    data["interleaving"].update(wins_a=None, ties=None, ci=None, winner=None)
    data["ab"].update(srm=None, ci=[0.1], p_value=None)
    data["decision"] = {"winner": None, "source": None, "recommendation": "keep_a"}
    data["trend"].append({"week_start": None, "model_version": None, "mrr": float("inf")})
    return data


@pytest.mark.parametrize(
    "data",
    [
        _partial(),
        {"week": None, "variants": None, "trend": None, "offline_vs_online": None},
        {"week": "2026-01-05", "variants": "v1", "trend": 3, "interleaving": [1, 2], "ab": "x"},
        {"variants": [None, 1, {"model_version": None}], "trend": [{}], "offline_vs_online": [{}]},
        {"interleaving": {}, "ab": {}, "decision": {}, "events": {}},
    ],
    ids=["none-and-nan-fields", "none-sections", "wrong-types", "empty-rows", "empty-objects"],
)
def test_partial_or_malformed_input_renders_without_failing(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    art = render_report(data, tmp_path)
    assert art.html_path.is_file() and art.text_path.is_file()
    json.loads(art.json_path.read_text(encoding="utf-8"))
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in art.images.values())
    assert "n/a" in art.text_path.read_text(
        encoding="utf-8"
    ) or "No data" in art.text_path.read_text(encoding="utf-8")


def test_a_chart_without_data_is_skipped_and_its_section_says_no_data(tmp_path: Path) -> None:
    data = full_data()
    data["offline_vs_online"] = [
        {
            "model_version": "v2",
            "offline_ndcg_at_10": None,
            "online_mrr": 0.45,
            "online_ctr_at_10": 0.66,
        }
    ]
    data["interleaving"] = None
    art = render_report(data, tmp_path)
    assert set(art.images) == ALL_CHARTS - {"offline-online", "interleaving"}
    html = art.html_path.read_text(encoding="utf-8")
    assert "No data for the offline vs online quality chart" in html
    assert "No data for the interleaving outcome chart" in html


def test_rendering_again_removes_charts_that_no_longer_have_data(tmp_path: Path) -> None:
    render_report(full_data(), tmp_path)
    art = render_report(no_data(), tmp_path)
    assert art.images == {}
    assert not list(tmp_path.glob("*.png"))


# ------------------------------------------------------------------------------ escaping
def hostile_data() -> dict[str, Any]:
    data = full_data()
    data["variants"][1]["model_version"] = HOSTILE
    data["variants"][1]["variant"] = '"><img src=x onerror=alert(1)>'
    data["trend"][-1]["model_version"] = HOSTILE
    data["offline_vs_online"][1]["model_version"] = "$\\frac{" + HOSTILE  # broken mathtext too
    data["interleaving"]["b"] = HOSTILE
    data["ab"]["treatment"] = HOSTILE
    data["decision"].update(winner=HOSTILE, reason=f"because {HOSTILE}")
    return data


def test_a_hostile_model_version_is_escaped_in_the_html(tmp_path: Path) -> None:
    art = render_report(hostile_data(), tmp_path)
    for html in (art.html_path.read_text(encoding="utf-8"), email_html(art)):
        assert "<script>" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert set(art.images) == ALL_CHARTS  # the labels ($, backslash) do not break the charts


def test_a_newline_in_a_model_version_does_not_reach_the_subject(tmp_path: Path) -> None:
    data = full_data()
    data["decision"]["winner"] = "v2\r\nBcc: everyone@example.com"
    art = render_report(data, tmp_path)
    assert "\n" not in art.subject and "\r" not in art.subject
    msg = build_message(art, sender="ltr@example.com", recipients=["ops@example.com"])
    assert msg["Bcc"] is None


# ------------------------------------------------------------------------------ JSON
def test_the_json_round_trips_the_input_and_lists_the_charts(tmp_path: Path) -> None:
    data = full_data()
    art = render_report(data, tmp_path)
    document = json.loads(art.json_path.read_text(encoding="utf-8"))
    assert document["data"] == data
    assert document["subject"] == art.subject
    assert [c["name"] for c in document["charts"]] == list(art.images)
    assert all((tmp_path / c["file"]).is_file() for c in document["charts"])


def test_the_json_is_strict_with_nan_and_infinity_written_as_null(tmp_path: Path) -> None:
    data = full_data()
    data["variants"][0]["mrr"] = float("nan")
    data["variants"][1]["latency_p99_ms"] = float("inf")
    art = render_report(data, tmp_path)

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    document = json.loads(art.json_path.read_text(encoding="utf-8"), parse_constant=refuse)
    assert document["data"]["variants"][0]["mrr"] is None
    assert document["data"]["variants"][1]["latency_p99_ms"] is None


def test_rendering_does_not_change_the_input(tmp_path: Path) -> None:
    data = _partial()
    before = copy.deepcopy(data)
    render_report(data, tmp_path)
    assert json.dumps(data, default=str) == json.dumps(before, default=str)


# ------------------------------------------------------------------------------ e-mail HTML
def test_the_email_html_differs_from_the_file_only_in_image_sources(tmp_path: Path) -> None:
    art = render_report(full_data(), tmp_path)
    saved = art.html_path.read_text(encoding="utf-8")
    mail = email_html(art)
    assert sorted(cid_references(mail)) == sorted(art.images)
    for name in art.images:
        saved = saved.replace(f'src="{name}.png"', f'src="cid:{name}"')
    assert mail == saved


# ------------------------------------------------------------------------------ atomicity
def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    render_report(full_data(), tmp_path)
    render_report(_partial(), tmp_path)
    assert not [n for n in files_in(tmp_path) if n.startswith(".") or n.endswith(".tmp")]


def test_a_failed_render_leaves_the_previous_report_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    render_report(full_data(), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken_savefig(self: Any, fname: Any, **kwargs: Any) -> None:
        Path(fname).write_bytes(PNG_MAGIC)  # half a chart, then the disk fills up
        raise OSError("no space left on device")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", broken_savefig)
    with pytest.raises(OSError, match="no space"):
        render_report(hostile_data(), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_charts_leave_matplotlibs_global_settings_alone(tmp_path: Path) -> None:
    def settings() -> dict[str, Any]:
        # dict.items reads the stored values: RcParams.__getitem__("backend") would resolve
        # (and import pyplot) by itself
        return dict(dict.items(cast(dict[str, Any], matplotlib.rcParams)))

    before = settings()
    render_report(full_data(), tmp_path)
    assert settings() == before


def test_charts_do_not_import_pyplot(tmp_path: Path) -> None:
    script = (
        "import sys, pathlib\n"
        "from ltr.online.report import render_report\n"
        f"art = render_report({full_data()!r}, pathlib.Path({str(tmp_path)!r}))\n"
        "assert len(art.images) == 5, art.images\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_templates_ship_with_the_package() -> None:
    templates = importlib.resources.files("ltr.online") / "templates"
    for name in ("weekly_report.html.j2", "weekly_report.txt.j2"):
        assert (templates / name).is_file()


# ------------------------------------------------------------------------------ message
def test_the_message_is_text_then_related_html_with_every_chart_inline(tmp_path: Path) -> None:
    art = render_report(full_data(), tmp_path)
    msg = build_message(art, sender="ltr@example.com", recipients="ops@example.com")
    parsed: Any = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)

    assert parsed.get_content_type() == "multipart/alternative"
    plain, related = parsed.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, *images = related.get_payload()
    assert html.get_content_type() == "text/html"
    assert sorted(p["Content-ID"] for p in images) == sorted(f"<{n}>" for n in art.images)
    assert all(p.get_content_disposition() == "inline" for p in images)


def test_a_message_without_charts_keeps_the_same_shape(tmp_path: Path) -> None:
    art = render_report(no_data(), tmp_path)
    msg = build_message(art, sender="ltr@example.com", recipients=["ops@example.com"])
    types = [p.get_content_type() for p in msg.walk()]
    assert types == ["multipart/alternative", "text/plain", "multipart/related", "text/html"]


@pytest.mark.parametrize("recipients", [[], (), [""], ["not an address"], ["a@b\r\nBcc: c@d"]])
def test_the_message_refuses_missing_or_malformed_recipients(
    tmp_path: Path, recipients: list[str]
) -> None:
    art = render_report(no_data(), tmp_path)
    with pytest.raises(ValueError, match="recipient"):
        build_message(art, sender="ltr@example.com", recipients=recipients)


def test_the_message_refuses_more_than_one_megabyte(tmp_path: Path) -> None:
    art = render_report(full_data(), tmp_path)
    huge = tmp_path / "huge.png"
    huge.write_bytes(PNG_MAGIC + bytes(range(256)) * (MAX_MESSAGE_BYTES // 256))
    big = dataclasses.replace(art, images={**art.images, "trend": huge})
    with pytest.raises(ValueError, match="over the 1,000,000-byte limit"):
        build_message(big, sender="ltr@example.com", recipients=["ops@example.com"])


def test_the_message_refuses_an_image_the_html_does_not_reference(tmp_path: Path) -> None:
    art = render_report(full_data(), tmp_path)
    extra = dataclasses.replace(art, images={**art.images, "stray": art.images["trend"]})
    with pytest.raises(ValueError, match="stray"):
        build_message(extra, sender="ltr@example.com", recipients=["ops@example.com"])


def test_the_eml_file_is_the_message_and_is_written_atomically(tmp_path: Path) -> None:
    art: ReportArtifacts = render_report(full_data(), tmp_path / "report")
    msg = build_message(art, sender="ltr@example.com", recipients=["ops@example.com"])
    path = write_eml(msg, tmp_path / "out" / "report.eml")
    parsed: Any = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == art.subject
    assert len(list(parsed.walk())) == len(list(msg.walk()))
    assert files_in(path.parent) == {"report.eml"}
