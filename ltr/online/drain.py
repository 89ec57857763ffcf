"""Exactly-once drain of the event streams (Redis Streams) into partitioned Parquet files.

The rank service appends impressions and clicks to Redis Streams (:mod:`serving.events`).
:class:`Drainer` moves them into ``<root>/<kind>/date=YYYY-MM-DD/<first-id>_<last-id>.parquet``
through a consumer group, so that every entry lands in exactly one file even when the job is
killed at any point:

1. **Own pending entries first.** Entries that an earlier, killed run received but did not
   acknowledge are claimed (``XAUTOCLAIM``, so a renamed consumer loses nothing) and re-read
   (``XREADGROUP ... 0``) before new ones (``XREADGROUP ... >``).
2. **Committed watermark.** Entries reach the files in stream-id order, one batch after the
   other, so "every entry up to id W is in a file" holds for W = the largest last id of any
   file. The watermark is that W: kept in ``<root>/_state/<kind>.json`` and recomputed from
   the file names at start (a run killed between the file's rename and the state update
   loses nothing and duplicates nothing). Entries at or below the watermark are only
   acknowledged, never written again.
3. **Atomic file per batch**, named by its id range: written to a temporary name, flushed to
   disk, renamed. A batch that spans UTC days becomes one file per day, in id order.
4. **XACK after the durable write**; a kill between write and ack leaves entries pending,
   and the next run acknowledges them without writing (they are below the watermark).
5. **Trim below the watermark only**: ``XTRIM MINID ~ <watermark>``: Redis 7.0 has neither
   ``XACKDEL`` nor ``XTRIM ... ACKED``; an id-based trim never removes an entry that is not
   in a file yet.

One drain per stream at a time: an ``flock`` on ``<root>/_state/<kind>.lock`` (the DAG also
runs with ``max_active_runs=1``). Entries whose payload cannot be decoded are kept, with their
raw fields as JSON in ``raw`` and the reason in ``error``: the drain never drops data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import redis

from ltr.utils.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

KINDS = ("impressions", "clicks")
DEFAULT_STREAMS: dict[str, str] = {
    "impressions": "ltr:events:impressions",
    "clicks": "ltr:events:clicks",
}
DEFAULT_GROUP = "ltr-drain"
DEFAULT_CONSUMER = "drain"
_FILE_RE = re.compile(r"^(\d+-\d+)_(\d+-\d+)\.parquet$")

StreamId = tuple[int, int]

_STR_LIST = pa.list_(pa.string())
_INT_LIST = pa.list_(pa.int32())
SCHEMAS: dict[str, pa.Schema] = {
    "impressions": pa.schema(
        [
            ("stream_id", pa.string()),
            ("ts", pa.timestamp("ms", tz="UTC")),
            ("request_id", pa.string()),
            ("user_id", pa.string()),
            ("query_id", pa.string()),
            ("model_version", pa.string()),
            ("variant", pa.string()),
            ("doc_ids", _STR_LIST),
            ("positions", _INT_LIST),
            ("teams", _STR_LIST),
            ("interleave_a", pa.string()),
            ("interleave_b", pa.string()),
            ("shadow_version", pa.string()),
            ("shadow_doc_ids", _STR_LIST),
            ("raw", pa.string()),
            ("error", pa.string()),
        ]
    ),
    "clicks": pa.schema(
        [
            ("stream_id", pa.string()),
            ("ts", pa.timestamp("ms", tz="UTC")),
            ("request_id", pa.string()),
            ("user_id", pa.string()),
            ("doc_ids", _STR_LIST),
            ("positions", _INT_LIST),
            ("raw", pa.string()),
            ("error", pa.string()),
        ]
    ),
}


class DrainError(RuntimeError):
    """The drain cannot proceed (Redis unreachable, another drain running, bad layout)."""


def parse_id(value: str) -> StreamId:
    """``"<ms>-<seq>"`` -> ``(ms, seq)``; a clear error for anything else."""
    ms, sep, seq = value.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a stream id: {value!r} (expected <milliseconds>-<sequence>)")
    return int(ms), int(seq)


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- decoding
def _blank(kind: str) -> dict[str, Any]:
    return {name: None for name in SCHEMAS[kind].names}


def _decode_impression(fields: Mapping[str, str], row: dict[str, Any]) -> None:
    doc_ids = json.loads(fields["doc_ids"])
    if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
        raise ValueError("doc_ids is not a JSON list of strings")
    row.update(
        request_id=fields["request_id"],
        user_id=fields.get("user_id", ""),
        query_id=fields["query_id"],
        model_version=fields["model_version"],
        variant=fields["variant"],
        doc_ids=doc_ids,
        positions=list(range(len(doc_ids))),
    )
    if "interleave" in fields:
        inter = json.loads(fields["interleave"])
        teams = inter.get("teams") or {}
        row.update(
            interleave_a=str(inter["a"]),
            interleave_b=str(inter["b"]),
            teams=[str(teams.get(d, "none")) for d in doc_ids],
        )
    if "shadow" in fields:
        shadow = json.loads(fields["shadow"])
        row["shadow_version"] = str(shadow.get("version", ""))
        if isinstance(shadow.get("doc_ids"), list):
            row["shadow_doc_ids"] = [str(d) for d in shadow["doc_ids"]]


def _decode_click(fields: Mapping[str, str], row: dict[str, Any]) -> None:
    clicks = json.loads(fields["clicks"])
    if not isinstance(clicks, list):
        raise ValueError("clicks is not a JSON list")
    row.update(
        request_id=fields["request_id"],
        user_id=fields.get("user_id", ""),
        doc_ids=[str(c[0]) for c in clicks],
        positions=[int(c[1]) for c in clicks],
    )


def decode_entry(kind: str, entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """One stream entry as a row of ``SCHEMAS[kind]``; undecodable payloads are kept raw."""
    row = _blank(kind)
    row["stream_id"] = entry_id
    row["ts"] = parse_id(entry_id)[0]
    try:
        if fields.get("v", "1") != "1":
            raise ValueError(f"unknown schema version {fields.get('v')!r}")
        if "ts_ms" in fields:
            row["ts"] = int(fields["ts_ms"])
        (_decode_impression if kind == "impressions" else _decode_click)(fields, row)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        clean = _blank(kind)
        clean.update(
            stream_id=entry_id,
            ts=parse_id(entry_id)[0],
            raw=json.dumps(dict(fields), ensure_ascii=False, sort_keys=True),
            error=what[:500],
        )
        return clean
    return row


# --------------------------------------------------------------------------- report
@dataclass
class StreamReport:
    kind: str
    stream: str
    written: int = 0
    files: list[str] = field(default_factory=list)
    acked: int = 0
    already_written: int = 0
    malformed: int = 0
    trimmed_before_drain: int = 0
    trimmed: int = 0
    watermark: str | None = None
    seconds: float = 0.0


@dataclass
class DrainReport:
    streams: dict[str, StreamReport]

    @property
    def written(self) -> int:
        return sum(s.written for s in self.streams.values())

    def to_dict(self) -> dict[str, Any]:
        return {"written": self.written, "streams": {k: asdict(v) for k, v in self.streams.items()}}


# --------------------------------------------------------------------------- drainer
Hook = Callable[[str, str], None]


class Drainer:
    """Moves the event streams into Parquet; see the module docstring.

    ``client`` must not use ``decode_responses`` (entries are decoded here). ``hook(stage,
    kind)`` is called after each step (``"read"``, ``"written"``, ``"acked"``), for tests
    that kill the process at exactly that point.
    """

    def __init__(
        self,
        client: redis.Redis,
        root: str | os.PathLike[str],
        *,
        streams: Mapping[str, str] | None = None,
        group: str = DEFAULT_GROUP,
        consumer: str = DEFAULT_CONSUMER,
        batch_size: int = 5000,
        trim: bool = True,
        hook: Hook | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.client = client
        self.root = Path(root)
        self.streams = dict(streams or DEFAULT_STREAMS)
        unknown = set(self.streams) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown event kinds {sorted(unknown)}; known: {list(KINDS)}")
        self.group, self.consumer = group, consumer
        self.batch_size, self.trim = batch_size, trim
        self.hook = hook

    # ------------------------------------------------------------------ state
    def _state_path(self, kind: str) -> Path:
        return self.root / "_state" / f"{kind}.json"

    def files(self, kind: str) -> list[Path]:
        """Every committed file of ``kind``, in stream-id order."""
        base = self.root / kind
        found = [p for p in base.glob("date=*/*.parquet") if _FILE_RE.match(p.name)]
        return sorted(found, key=lambda p: parse_id(_FILE_RE.match(p.name).group(1)))  # type: ignore[union-attr]

    def watermark(self, kind: str) -> StreamId | None:
        """The largest id known to be in a file: state file and file names, whichever is
        larger (the state file may lag one file behind after a kill)."""
        best: StreamId | None = None
        state = self._state_path(kind)
        if state.is_file():
            value = json.loads(state.read_text()).get("watermark")
            if value:
                best = parse_id(value)
        start_day = None if best is None else _day(best)
        for part in (self.root / kind).glob("date=*"):
            if start_day is not None and part.name[5:] < start_day:
                continue
            for p in part.glob("*.parquet"):
                m = _FILE_RE.match(p.name)
                if m:
                    last = parse_id(m.group(2))
                    if best is None or last > best:
                        best = last
        return best

    @contextlib.contextmanager
    def _lock(self, kind: str) -> Iterator[None]:
        path = self.root / "_state" / f"{kind}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DrainError(f"another drain of {kind} holds {path}") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ redis
    def _redis(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise DrainError(f"{what} failed: {exc}") from exc

    def _ensure_group(self, stream: str) -> None:
        try:
            self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise DrainError(f"XGROUP CREATE {stream} {self.group} failed: {exc}") from exc
        except redis.RedisError as exc:
            raise DrainError(f"XGROUP CREATE {stream} {self.group} failed: {exc}") from exc

    def _claim_others(self, stream: str, report: StreamReport) -> None:
        """Pending entries of other consumers of the group become ours (a consumer renamed
        between runs must not strand them)."""
        start = "0-0"
        while True:
            raw = self._redis(
                f"XAUTOCLAIM {stream}",
                self.client.xautoclaim,
                stream,
                self.group,
                self.consumer,
                0,
                start_id=start,
                count=1000,
            )
            next_start, _claimed = _text(raw[0]), raw[1]
            # Redis >= 7.0 also lists pending ids whose entries were trimmed away before
            # they were drained (and drops them from the pending list)
            deleted = [_text(i) for i in raw[2]] if len(raw) > 2 else []
            if deleted:
                report.trimmed_before_drain += len(deleted)
                self._redis("XACK", self.client.xack, stream, self.group, *deleted)
            if next_start == "0-0":
                return
            start = next_start

    def _read(self, stream: str, pending: bool) -> list[tuple[str, dict[str, str] | None]]:
        raw = self._redis(
            f"XREADGROUP {stream}",
            lambda: self.client.xreadgroup(
                self.group, self.consumer, {stream: "0" if pending else ">"}, self.batch_size
            ),
        )
        out: list[tuple[str, dict[str, str] | None]] = []
        batches = raw.values() if isinstance(raw, dict) else [r[1:] for r in raw or []]
        for wrapped in batches:
            for entries in wrapped or []:
                for entry_id, fields in entries or []:
                    decoded = None
                    if fields is not None:
                        decoded = {_text(k): _text(v) for k, v in fields.items()}
                    out.append((_text(entry_id), decoded))
        return out

    # ------------------------------------------------------------------ writing
    def _write(self, kind: str, rows: list[dict[str, Any]]) -> list[Path]:
        """Rows (ascending ids) into one file per UTC day, in id order; each atomic."""
        written: list[Path] = []
        by_day: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(_day(parse_id(row["stream_id"])), []).append(row)
        for day in sorted(by_day):
            part = by_day[day]
            name = f"{part[0]['stream_id']}_{part[-1]['stream_id']}.parquet"
            path = self.root / kind / f"date={day}" / name
            table = pa.Table.from_pylist(part, schema=SCHEMAS[kind])
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp, compression="zstd")
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            _fsync_dir(path.parent)
            written.append(path)
        return written

    def _stage(self, stage: str, kind: str) -> None:
        if self.hook is not None:
            self.hook(stage, kind)

    # ------------------------------------------------------------------ run
    def drain(self, max_entries: int | None = None) -> DrainReport:
        """Drain every stream once (until it is empty or ``max_entries`` per stream moved)."""
        return DrainReport({kind: self.drain_stream(kind, max_entries) for kind in self.streams})

    def drain_stream(self, kind: str, max_entries: int | None = None) -> StreamReport:
        stream = self.streams[kind]
        report = StreamReport(kind, stream)
        t0 = time.perf_counter()
        with self._lock(kind):
            self._ensure_group(stream)
            self._claim_others(stream, report)
            mark = self.watermark(kind)
            pending = True
            moved = 0
            while max_entries is None or moved < max_entries:
                entries = self._read(stream, pending)
                if not entries:
                    if pending:
                        pending = False
                        continue
                    break
                self._stage("read", kind)
                ids = [e[0] for e in entries]
                rows = []
                for entry_id, fields in entries:
                    sid = parse_id(entry_id)
                    if fields is None:  # pending, but trimmed away before it was drained
                        report.trimmed_before_drain += 1
                    elif mark is not None and sid <= mark:
                        report.already_written += 1
                    else:
                        rows.append(decode_entry(kind, entry_id, fields))
                if rows:
                    paths = self._write(kind, rows)
                    mark = parse_id(rows[-1]["stream_id"])
                    write_json_atomic(
                        self._state_path(kind),
                        {"watermark": format_id(mark), "stream": stream, "group": self.group},
                    )
                    report.written += len(rows)
                    report.malformed += sum(1 for r in rows if r["error"] is not None)
                    report.files += [str(p.relative_to(self.root)) for p in paths]
                self._stage("written", kind)
                acked = self._redis(f"XACK {stream}", self.client.xack, stream, self.group, *ids)
                report.acked += int(acked)
                moved += len(entries)
                self._stage("acked", kind)
            if self.trim and mark is not None:
                report.trimmed = int(
                    self._redis(
                        f"XTRIM {stream}",
                        lambda: self.client.xtrim(stream, minid=format_id(mark), approximate=True),
                    )
                )
            report.watermark = format_id(mark) if mark is not None else None
        report.seconds = round(time.perf_counter() - t0, 3)
        log.info("drained %s: %s", kind, asdict(report) | {"files": len(report.files)})
        return report

    def pending_count(self, kind: str) -> int:
        """Entries delivered to the group and not acknowledged (0 after a clean drain)."""
        info = self._redis("XPENDING", lambda: self.client.xpending(self.streams[kind], self.group))
        return int(info["pending"] if isinstance(info, dict) else info[0])


def _day(sid: StreamId) -> str:
    return datetime.fromtimestamp(sid[0] / 1000, tz=UTC).strftime("%Y-%m-%d")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_events(
    root: str | os.PathLike[str],
    kind: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The drained events of ``kind`` with ``start <= ts < end`` (all when unbounded)."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}; known: {list(KINDS)}")
    base = Path(root) / kind
    paths = []
    for p in sorted(base.glob("date=*/*.parquet")):
        if not _FILE_RE.match(p.name):
            continue
        day = p.parent.name[5:]
        if start is not None and day < start.astimezone(UTC).strftime("%Y-%m-%d"):
            continue
        if end is not None and day > end.astimezone(UTC).strftime("%Y-%m-%d"):
            continue
        paths.append(p)
    schema = SCHEMAS[kind]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    if not paths:
        return schema.empty_table()
    table = pa.concat_tables(pq.read_table(p, columns=list(schema.names)) for p in paths)
    if start is not None or end is not None:
        import pyarrow.compute as pc

        mask = None
        ts = table.column("ts") if "ts" in table.column_names else None
        if ts is None:
            raise ValueError("a time filter needs the ts column")
        if start is not None:
            mask = pc.greater_equal(ts, pa.scalar(start, pa.timestamp("ms", tz="UTC")))
        if end is not None:
            upper = pc.less(ts, pa.scalar(end, pa.timestamp("ms", tz="UTC")))
            mask = upper if mask is None else pc.and_(mask, upper)
        table = table.filter(mask)
    return table
