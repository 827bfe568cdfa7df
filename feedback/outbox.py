"""An on-disk, append-only log of accepted events: what makes "accepted" mean "will reach Kafka".

Segments of JSON lines, fsynced before an append returns; a cursor file (written atomically)
marks how far delivery to Kafka has been acknowledged. It is written at most every `cursor_every_s`
(and on close), not per acknowledged batch: its fsyncs would compete with the appends' on the same
disk. Replaying from the cursor after a crash may send a record twice (up to that interval's worth);
consumers deduplicate by event id, so that is harmless.

Its disk may fill or fail. An append that fails (ENOSPC, EIO) raises and is cut back to the last
whole record, so nothing half-written stays behind the records that follow; should even the cut
fail, the fragment is closed with a newline before the next append, and the reader hands any line
that is not a whole record to the sender as `corrupt` (dead-lettered, never fatal). A torn last
line (a crash mid-write, never acknowledged to anyone) is cut off when the outbox is opened.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from feedback.files import fsync_directory, write_atomic


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
    corrupt: bool = False  # a line of the log that is not a whole record: `value` holds its raw bytes

    def to_line(self) -> bytes:
        return json.dumps(
            {"t": self.topic, "k": self.key.decode(), "v": self.value.decode(), "a": self.accepted_at}
        ).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> OutboxRecord:
        try:
            row = json.loads(line)
            return cls(row["t"], row["k"].encode(), row["v"].encode(), row["a"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls("", b"", line.rstrip(b"\n"), 0.0, corrupt=True)


class OutboxLocked(RuntimeError):
    """Another process already owns this outbox directory."""


class Outbox:
    """Single writer, single reader (the sender thread); both may run in different threads."""

    def __init__(self, directory: Path, *, segment_bytes: int = 16 * 1024 * 1024, retention_s: float = 24 * 3600,
                 cursor_every_s: float = 0.5) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.retention_s = retention_s
        self.cursor_every_s = cursor_every_s
        self._cursor_written_at = 0.0
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = open(directory / "LOCK", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutboxLocked(f"{directory} is in use by another process: give each process its own RLHF_OUTBOX_DIR") from None
        self.cursor, self.cluster_id = self._read_cursor()
        segments = self._segments()
        self._segment = segments[-1] if segments else max(self.cursor.segment, 1)
        self._cut_torn_tail()
        self._file = open(self._path(self._segment), "ab", buffering=0)  # unbuffered: a failed write leaves nothing queued
        self._size = os.fstat(self._file.fileno()).st_size  # bytes of whole records in the open segment
        self._pending_lock = threading.Lock()  # the writer adds, the sender subtracts
        self.pending = self._count_from(self.cursor)

    # -- writing ---------------------------------------------------------------------------
    def append(self, records: list[OutboxRecord]) -> None:
        """Append and fsync: when this returns, the records survive a crash or power loss. On an
        OSError (disk full, I/O error) nothing of them stays in the log, and the error is raised."""
        if self._size >= self.segment_bytes:
            self._roll()
        fd = self._file.fileno()
        if os.fstat(fd).st_size != self._size:  # a fragment an earlier failed append could not cut
            self._cut_to(self._size) or self._write(fd, b"\n")  # else a line of its own: read back as corrupt
            self._size = os.fstat(fd).st_size
        data = b"".join(record.to_line() for record in records)
        try:
            self._write(fd, data)
            os.fsync(fd)
        except OSError:
            self._cut_to(self._size)
            raise
        self._size += len(data)
        self._count(len(records))

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def _cut_to(self, size: int) -> bool:
        try:
            os.ftruncate(self._file.fileno(), size)
            return True
        except OSError:
            return False

    def _count(self, records: int) -> None:
        with self._pending_lock:
            self.pending += records

    def _roll(self) -> None:
        """The next segment; the old one stays open until the new one exists (a failure leaves the
        outbox writable where it was)."""
        new = open(self._path(self._segment + 1), "ab", buffering=0)
        self._fsync_directory()
        self._file.close()
        self._file, self._size = new, 0
        self._segment += 1  # last: a reader that sees the new number finds the old segment complete

    # -- reading and acknowledging ------------------------------------------------------------
    def read(self, cursor: Cursor, max_records: int) -> tuple[list[OutboxRecord], Cursor]:
        """Whole records from `cursor` on (at most `max_records`), and the cursor after them."""
        records: list[OutboxRecord] = []
        segment, offset = cursor.segment, cursor.offset
        while len(records) < max_records:
            writing = self._segment  # read before the segment: if the writer has moved on, it is complete
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
            if len(records) >= max_records or segment >= writing:
                break
            segment, offset = segment + 1, 0
        return records, Cursor(segment, offset)

    def ack(self, cursor: Cursor, delivered: int, cluster_id: str | None) -> None:
        """Everything before `cursor` is in Kafka cluster `cluster_id`: persist that (at most every
        `cursor_every_s`), and drop delivered segments older than the retention."""
        changed = cluster_id != self.cluster_id
        self.cluster_id = cluster_id
        self._count(-delivered)
        if not changed and time.monotonic() - self._cursor_written_at < self.cursor_every_s:
            self.cursor = cursor  # in memory; on disk with the next write (a crash re-sends from the older one)
            return
        self._write_cursor(cursor)
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
        self._count(again)
        return again

    def dead_letter(self, record: OutboxRecord, reason: str) -> None:
        """Set aside a record Kafka refused for good (too large, invalid), fsynced, so delivery goes on
        past it and an operator can still read (or replay) it: `dead-letter.jsonl`, one JSON line each."""
        row = {"raw": record.value.decode(errors="replace")} if record.corrupt else json.loads(record.to_line())
        line = json.dumps({**row, "reason": reason, "dead_lettered_at": time.time()}).encode()
        with open(self.directory / "dead-letter.jsonl", "ab") as stream:
            stream.write(line + b"\n")
            stream.flush()
            os.fsync(stream.fileno())

    def _write_cursor(self, cursor: Cursor) -> None:
        write_atomic(self.directory / "cursor.json",
                     json.dumps({"segment": cursor.segment, "offset": cursor.offset, "cluster_id": self.cluster_id}))
        self.cursor = cursor
        self._cursor_written_at = time.monotonic()

    def close(self) -> None:
        try:
            self._write_cursor(self.cursor)  # what was delivered since the last write
        except OSError:  # a failing disk: the older cursor stands, and its records are sent again
            pass
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
        if not path.exists():
            return
        data = path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole != len(data):
            os.truncate(path, whole)

    def _count_from(self, cursor: Cursor) -> int:
        count = 0
        while True:
            records, cursor = self.read(cursor, 10_000)
            if not records:
                return count
            count += len(records)

    def _fsync_directory(self) -> None:
        fsync_directory(self.directory)
