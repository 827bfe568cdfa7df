"""An on-disk, append-only log of accepted events: what makes "accepted" mean "will reach Kafka".

Segments of JSON lines, fsynced before an append returns; a cursor file (written atomically)
marks how far delivery to Kafka has been acknowledged. Replaying from the cursor after a crash
may send a record twice; consumers deduplicate by event id, so that is harmless. A torn last line
(a crash mid-write, never acknowledged to anyone) is cut off when the outbox is opened.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, order=True)
class Cursor:
    segment: int
    offset: int


@dataclass(frozen=True)
class OutboxRecord:
    topic: str
    key: bytes
    value: bytes
    accepted_at: float

    def to_line(self) -> bytes:
        return json.dumps(
            {"t": self.topic, "k": self.key.decode(), "v": self.value.decode(), "a": self.accepted_at}
        ).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> OutboxRecord:
        row = json.loads(line)
        return cls(row["t"], row["k"].encode(), row["v"].encode(), row["a"])


class OutboxLocked(RuntimeError):
    """Another process already owns this outbox directory."""


class Outbox:
    """Single writer, single reader (the sender thread); both may run in different threads."""

    def __init__(self, directory: Path, *, segment_bytes: int = 16 * 1024 * 1024, retention_s: float = 24 * 3600) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.retention_s = retention_s
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = open(directory / "LOCK", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutboxLocked(f"{directory} is in use by another process: give each process its own RLHF_OUTBOX_DIR") from None
        self.cursor, self.cluster_id = self._read_cursor()
        segments = self._segments()
        self._segment = segments[-1] if segments else max(self.cursor.segment, 1)
        self._file = open(self._path(self._segment), "ab")
        self._cut_torn_tail()
        self.pending = self._count_from(self.cursor)

    # -- writing ---------------------------------------------------------------------------
    def append(self, records: list[OutboxRecord]) -> None:
        """Append and fsync: when this returns, the records survive a crash or power loss."""
        if self._file.tell() >= self.segment_bytes:
            self._roll()
        self._file.write(b"".join(record.to_line() for record in records))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.pending += len(records)

    def _roll(self) -> None:
        self._file.close()
        self._segment += 1
        self._file = open(self._path(self._segment), "ab")
        self._fsync_directory()

    # -- reading and acknowledging ------------------------------------------------------------
    def read(self, cursor: Cursor, max_records: int) -> tuple[list[OutboxRecord], Cursor]:
        """Whole records from `cursor` on (at most `max_records`), and the cursor after them."""
        records: list[OutboxRecord] = []
        segment, offset = cursor.segment, cursor.offset
        while len(records) < max_records:
            path = self._path(segment)
            if not path.exists():
                break
            with open(path, "rb") as stream:
                stream.seek(offset)
                while len(records) < max_records:
                    line = stream.readline()
                    if not line.endswith(b"\n"):  # end of file, or a line still being written
                        break
                    records.append(OutboxRecord.from_line(line))
                    offset += len(line)
            if len(records) >= max_records or segment >= self._segment:
                break
            segment, offset = segment + 1, 0
        return records, Cursor(segment, offset)

    def ack(self, cursor: Cursor, delivered: int, cluster_id: str | None) -> None:
        """Everything before `cursor` is in Kafka cluster `cluster_id`: persist that, and drop
        delivered segments older than the retention."""
        self.cluster_id = cluster_id
        self._write_cursor(cursor)
        self.pending -= delivered
        horizon = time.time() - self.retention_s
        for segment in self._segments():
            if segment < cursor.segment and self._path(segment).stat().st_mtime < horizon:
                self._path(segment).unlink()

    def rewind(self) -> int:
        """Deliver everything retained again (a fresh, empty broker came up); returns how many."""
        segments = self._segments()
        start = Cursor(segments[0], 0) if segments else self.cursor
        again = self._count_from(start) - self.pending
        self._write_cursor(start)
        self.pending += again
        return again

    def dead_letter(self, record: OutboxRecord, reason: str) -> None:
        """Set aside a record Kafka refused for good (too large, invalid), fsynced, so delivery goes on
        past it and an operator can still read (or replay) it: `dead-letter.jsonl`, one JSON line each."""
        line = json.dumps({**json.loads(record.to_line()), "reason": reason, "dead_lettered_at": time.time()}).encode()
        with open(self.directory / "dead-letter.jsonl", "ab") as stream:
            stream.write(line + b"\n")
            stream.flush()
            os.fsync(stream.fileno())

    def _write_cursor(self, cursor: Cursor) -> None:
        tmp = self.directory / "cursor.json.tmp"
        tmp.write_text(json.dumps(
            {"segment": cursor.segment, "offset": cursor.offset, "cluster_id": self.cluster_id}
        ))
        with open(tmp, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, self.directory / "cursor.json")
        self.cursor = cursor

    def oldest_pending_age_s(self) -> float:
        records, _ = self.read(self.cursor, 1)
        return time.time() - records[0].accepted_at if records else 0.0

    def close(self) -> None:
        self._file.close()
        self._lock.close()

    # -- helpers --------------------------------------------------------------------------------
    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:010d}.log"

    def _segments(self) -> list[int]:
        return sorted(int(path.stem) for path in self.directory.glob("*.log"))

    def _read_cursor(self) -> tuple[Cursor, str | None]:
        path = self.directory / "cursor.json"
        if not path.exists():
            segments = self._segments()
            return Cursor(segments[0] if segments else 1, 0), None
        row = json.loads(path.read_text())
        return Cursor(row["segment"], row["offset"]), row["cluster_id"]

    def _cut_torn_tail(self) -> None:
        path = self._path(self._segment)
        data = path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole != len(data):
            os.truncate(path, whole)
            self._file.seek(0, os.SEEK_END)

    def _count_from(self, cursor: Cursor) -> int:
        count = 0
        while True:
            records, cursor = self.read(cursor, 10_000)
            if not records:
                return count
            count += len(records)

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
