"""The durable producer: every accepted event reaches Kafka, whatever the broker does meanwhile.

`submit()` never blocks: a writer thread group-commits queued events to the outbox (one fsync
per batch) and resolves each event's future once it is on disk; `persist()` is the same for a
coroutine that must wait for the disk (feedback's 202): the events of one event-loop turn go to the
writer as one batch, so a thousand waiting requests cost one thread hand-off, not a thousand; a sender thread delivers the
outbox to Kafka in order (acks=all, idempotent) and advances the outbox cursor only after the
broker acknowledged. A down broker only grows the backlog, visible in metrics.

Both threads are supervised: an unexpected error (a cursor write that fails, a bug) is logged,
counted in `rlhf_outbox_thread_restarts_total` and the loop starts again after a backoff, so
neither ever dies silently; `health()` is their state for `/readyz`.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import structlog
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import (CorruptRecordError, InvalidRecordError, KafkaError, MessageSizeTooLargeError,
                          RecordListTooLargeError)
from prometheus_client import Counter, Gauge

from feedback.events import Event
from feedback.outbox import Outbox, OutboxRecord

log = structlog.get_logger(__name__)

# errors about the record itself: sending it again can never succeed. Anything else (a broker away,
# a leader moving, even a missing ACL an operator may fix) is retried, the record kept in order.
PERMANENT = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError, CorruptRecordError)

BACKLOG = Gauge("rlhf_outbox_backlog_records", "Accepted events on disk not yet acknowledged by Kafka.", ["outbox"])
BACKLOG_AGE = Gauge("rlhf_outbox_backlog_age_seconds", "Age of the oldest event not yet in Kafka.", ["outbox"])
DELIVERED = Counter("rlhf_outbox_delivered_total", "Events acknowledged by Kafka.", ["outbox"])
SEND_FAILURES = Counter("rlhf_outbox_send_failures_total", "Failed delivery attempts (retried).", ["outbox"])
DEAD_LETTERED = Counter(
    "rlhf_outbox_dead_lettered_total", "Events Kafka refused for good (too large, invalid), set aside in the outbox's "
    "dead-letter.jsonl so delivery goes on; any is worth an alert.", ["outbox", "reason"])
APPEND_FAILURES = Counter("rlhf_outbox_append_failures_total",
                          "Batches the outbox could not write (disk full or failing): refused, nothing kept.", ["outbox"])
WRITABLE = Gauge("rlhf_outbox_writable", "0 while the outbox's last append failed (disk full or failing), else 1.", ["outbox"])
THREAD_RESTARTS = Counter("rlhf_outbox_thread_restarts_total",
                          "Outbox writer/sender loops restarted after an unexpected error.", ["outbox", "thread"])
REPLAYS = Counter("rlhf_outbox_replays_total", "Times a fresh (emptied) broker was detected and the retained log replayed.", ["outbox"])


class DurableProducer:
    def __init__(
        self,
        bootstrap_servers: list[str],
        outbox_dir: Path,
        *,
        client_config: dict | None = None,
        batch_size: int = 500,
        retry_backoff_s: float = 0.5,
        delivery_timeout_s: float = 10.0,
        retention_s: float = 24 * 3600,
        broker_check_s: float = 5.0,
        linger_s: float = 0.05,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        # login and TLS of every client (RuntimeSettings.kafka_client()); the brokers are `bootstrap_servers`
        self._client = {k: v for k, v in (client_config or {}).items() if k != "bootstrap_servers"}
        self.outbox = Outbox(outbox_dir, retention_s=retention_s)
        self.broker_check_s = broker_check_s
        self._checked_at = 0.0
        self._verify_before_send = True  # at start and after every outage: is this broker the one we wrote to?
        self._probe: KafkaAdminClient | None = None
        self._cluster_id: str | None = None
        self.name = outbox_dir.name
        self.batch_size = batch_size
        self.retry_backoff_s = retry_backoff_s
        self.delivery_timeout_s = delivery_timeout_s
        self.linger_s = linger_s
        self._queue: queue.Queue[tuple[list[OutboxRecord], Future[None]] | None] = queue.Queue()
        self._gathering: list[tuple[OutboxRecord, asyncio.Future[None]]] = []  # persist()'s events of this loop turn
        self._wake_sender = threading.Event()
        self._stop = threading.Event()
        self._kafka: KafkaProducer | None = None
        self.writable = True
        self.last_error: dict[str, str] = {}  # thread -> its last unexpected error
        self._writer = self._supervised("writer", self._write_loop)
        self._sender = self._supervised("sender", self._send_loop)
        BACKLOG.labels(self.name).set(self.outbox.pending)
        WRITABLE.labels(self.name).set(1)

    def start(self) -> DurableProducer:
        self._writer.start()
        self._sender.start()
        return self

    def submit(self, topic: str, event: Event) -> Future[None]:
        """Queue an event; the future resolves once it is durable on disk (never blocks)."""
        done: Future[None] = Future()
        self._queue.put(([OutboxRecord(topic, event.kafka_key(), event.to_wire(), time.time())], done))
        return done

    async def persist(self, topic: str, event: Event) -> None:
        """Return once the event is durable on disk; raises the outbox's OSError if it could not be written.
        Group commit on the event loop: every persist() of one loop turn shares one batch and one fsync."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not self._gathering:
            loop.call_soon(self._hand_over)
        self._gathering.append((OutboxRecord(topic, event.kafka_key(), event.to_wire(), time.time()), done))
        await done

    def _hand_over(self) -> None:
        """One queue entry for the events gathered this turn; their futures settle together, on the loop."""
        gathered, self._gathering = self._gathering, []
        batch: Future[None] = Future()
        self._queue.put(([record for record, _ in gathered], batch))

        def settle(written: asyncio.Future[None]) -> None:
            error = written.exception()
            for _, done in gathered:
                if done.done():
                    continue  # its request was cancelled (client gone); the event is on disk regardless
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)
        asyncio.wrap_future(batch).add_done_callback(settle)

    def health(self) -> dict:
        """Whether both threads run and the outbox takes writes, with the last errors (for /readyz)."""
        return {"writer": self._writer.is_alive(), "sender": self._sender.is_alive(), "writable": self.writable,
                "backlog": self.backlog, "errors": dict(self.last_error)}

    @property
    def backlog(self) -> int:
        return self.outbox.pending + self._queue.qsize()

    def wait_delivered(self, timeout_s: float) -> bool:
        """Block until everything accepted so far is in Kafka (tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.backlog and time.monotonic() < deadline:
            self._wake_sender.set()
            time.sleep(0.05)
        return not self.backlog

    def close(self, drain_timeout_s: float = 5.0) -> None:
        """Persist everything queued; try to deliver it for a moment; the rest waits on disk."""
        self._queue.put(None)
        self._writer.join()
        self.wait_delivered(drain_timeout_s)
        self._stop.set()
        self._wake_sender.set()
        self._sender.join()
        if self._kafka is not None:
            self._kafka.close(timeout=1)
        self._close_probe()
        self.outbox.close()

    # -- threads -----------------------------------------------------------------------------
    def _supervised(self, role: str, loop) -> threading.Thread:
        """A daemon thread that runs `loop` until it returns, restarting it after any error."""
        def run() -> None:
            backoff = self.retry_backoff_s
            while True:
                try:
                    return loop()
                except Exception as error:  # noqa: BLE001 - whatever it was, the thread must go on
                    THREAD_RESTARTS.labels(self.name, role).inc()
                    self.last_error[role] = repr(error)
                    log.exception("outbox.thread_restarted", outbox=self.name, thread=role, backoff_s=backoff)
                    if self._stop.wait(backoff) and role == "sender":
                        return
                    backoff = min(backoff * 2, 30.0)
        return threading.Thread(target=run, name=f"outbox-{role}-{self.name}", daemon=True)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            batch, size = [item], len(item[0]) if item else 0
            while item is not None and size < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                size += len(item[0]) if item else 0
            entries = [entry for entry in batch if entry is not None]
            stopping = len(entries) < len(batch)  # the stop marker came with this batch
            if entries:
                try:
                    self.outbox.append([record for records, _ in entries for record in records])
                except Exception as error:  # disk full or gone: the caller must not be told "accepted"
                    for _, done in entries:
                        done.set_exception(error)
                    if not isinstance(error, OSError) and not stopping:
                        raise
                    self.writable = False
                    WRITABLE.labels(self.name).set(0)
                    APPEND_FAILURES.labels(self.name).inc()
                    log.error("outbox.append_failed", outbox=self.name, error=str(error))
                else:
                    self.writable = True
                    WRITABLE.labels(self.name).set(1)
                    for _, done in entries:
                        done.set_result(None)
                    BACKLOG.labels(self.name).set(self.backlog)
                    self._wake_sender.set()
            if stopping:
                return

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            if self._verify_before_send or time.monotonic() - self._checked_at >= self.broker_check_s:
                if not self._replay_if_broker_lost_data() and self._verify_before_send:
                    self._stop.wait(self.retry_backoff_s)  # broker unreachable: sending would fail too
                    continue
                self._verify_before_send = False
            records, after = self.outbox.read(self.outbox.cursor, self.batch_size)
            BACKLOG_AGE.labels(self.name).set(time.time() - records[0].accepted_at if records else 0.0)
            if not records:
                self._wake_sender.wait(0.5)
                self._wake_sender.clear()
                continue
            if len(records) < self.batch_size and self.linger_s > 0 and not self._stop.is_set():
                # as Kafka's linger.ms: under load, wait a moment so one send carries many records (fewer
                # round trips and wake-ups for this thread, which shares the GIL with the request path)
                self._stop.wait(self.linger_s)
                records, after = self.outbox.read(self.outbox.cursor, self.batch_size)
            try:
                refused = self._deliver([r for r in records if not r.corrupt])
                refused += [(r, "corrupt outbox line (not a whole record)") for r in records if r.corrupt]
            except (KafkaError, OSError) as error:
                SEND_FAILURES.labels(self.name).inc()
                log.warning("outbox.send_failed", outbox=self.name, backlog=self.backlog, error=repr(error))
                self._reset_kafka()
                self._verify_before_send = True  # after an outage, check whether the broker came back empty
                self._stop.wait(self.retry_backoff_s)
                continue
            for record, error in refused:  # a poison pill never blocks what comes after it
                reason = error if isinstance(error, str) else repr(error)
                self.outbox.dead_letter(record, reason)
                DEAD_LETTERED.labels(self.name, "CorruptLine" if record.corrupt else type(error).__name__).inc()
                log.error("outbox.dead_lettered", outbox=self.name, topic=record.topic, bytes=len(record.value),
                          error=reason)
            self.outbox.ack(after, len(records), self._cluster_id)
            DELIVERED.labels(self.name).inc(len(records) - len(refused))
            BACKLOG.labels(self.name).set(self.backlog)

    def _replay_if_broker_lost_data(self) -> bool:
        """A restarted in-memory broker is empty and, started by us, reports a new cluster id
        (Kafka's cluster id is unique per cluster). If the cluster we last delivered to is not the
        one answering now, deliver the retained log again; consumers deduplicate by event id, so
        a replay is harmless where data did survive. Returns False when the broker did not answer."""
        self._checked_at = time.monotonic()
        try:
            self._probe = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                           client_id=f"rlhf-outbox-probe-{self.name}", **self._client)
            self._cluster_id = self._probe.describe_cluster()["cluster_id"]
        except (KafkaError, OSError) as error:
            log.info("outbox.broker_check_failed", outbox=self.name, error=repr(error))
            return False
        finally:  # not kept open between checks: an idle admin client's I/O thread still takes the GIL
            self._close_probe()
        if self.outbox.cluster_id is not None and self._cluster_id != self.outbox.cluster_id:
            again = self.outbox.rewind()
            REPLAYS.labels(self.name).inc()
            BACKLOG.labels(self.name).set(self.backlog)
            log.warning("outbox.replay", outbox=self.name, reason="a different (fresh) Kafka cluster answers",
                        delivered_to=self.outbox.cluster_id, now=self._cluster_id, records=again)
        return True

    def _close_probe(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def _deliver(self, records: list[OutboxRecord]) -> list[tuple[OutboxRecord, KafkaError | str]]:
        """Send a batch and wait for every acknowledgement. Raises on a transient failure (the batch is
        sent again: consumers deduplicate); returns the records refused for good, with their errors."""
        if self._kafka is None:
            self._kafka = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                acks="all",
                enable_idempotence=True,  # explicit: a conflicting setting raises instead of turning it off
                linger_ms=5,
                max_block_ms=int(self.delivery_timeout_s * 1000),
                request_timeout_ms=int(self.delivery_timeout_s * 1000),
                client_id=f"rlhf-outbox-{self.name}",
                **self._client,
            )
        refused: list[tuple[OutboxRecord, KafkaError | str]] = []
        futures = []
        for record in records:
            try:  # the client refuses a record over its max_request_size here, before sending
                futures.append((record, self._kafka.send(record.topic, key=record.key, value=record.value)))
            except PERMANENT as error:
                refused.append((record, error))
        self._kafka.flush(timeout=self.delivery_timeout_s)
        for record, future in futures:
            try:
                future.get(timeout=0)  # raises the broker's error for a record that failed
            except PERMANENT as error:
                refused.append((record, error))
        return refused

    def _reset_kafka(self) -> None:
        if self._kafka is not None:
            try:
                self._kafka.close(timeout=0)
            except KafkaError:
                pass
            self._kafka = None
