"""Callbacks: POST a tune, a prompt, or a tune's prompts as JSON when they finish; retried with backoff.

Deliveries are rows in the database, queued in the same transaction as the status change they report
(`studio.queue.end_tune` / `end_prompt`), so a crash cannot lose one; each attempt is recorded. A callback
that keeps failing ends `failed` and never changes the tune or prompt it reports on.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from storage.net import backoff_delays, post_json
from storage.records import DeliveryKind, DeliveryStatus
from studio.service import Studio

log = logging.getLogger(__name__)


class CallbackSender:
    """Queues and delivers callbacks for one studio.

    Args:
        studio: the service (records, settings, clock).
        delays: seconds to wait before each retry; the number of attempts is `len(delays) + 1`.
        timeout: seconds one POST may take; a receiver that never answers costs at most this per attempt.
    """

    def __init__(self, studio: Studio, *, delays: list[float] | None = None, timeout: float = 10.0):
        self.studio = studio
        self.db = studio.db
        self.delays = backoff_delays() if delays is None else delays
        self.timeout = timeout

    def deliver_due(self) -> int:
        """Try every delivery that is due now. Returns how many were delivered."""
        delivered = 0
        now = self.studio.clock()
        for delivery in self.db.due_deliveries(now):
            payload = self._payload(delivery.owner, delivery.kind, delivery.record_id)
            status, error = None, None
            try:
                status = post_json(
                    delivery.url,
                    payload,
                    timeout=self.timeout,
                    allowed_hosts=self.studio.settings.allowed_fetch_hosts,
                )
                ok = 200 <= status < 300
                error = None if ok else f"HTTP {status}"
            except Exception as failure:  # network errors, refusals: recorded, retried
                ok, error = False, str(failure)
            if ok:
                self.db.record_delivery(
                    delivery.id, status=DeliveryStatus.DELIVERED, http_status=status, error=None, next_at=None
                )
                delivered += 1
                continue
            attempt = delivery.attempts  # attempts made before this one
            if attempt < len(self.delays):
                next_at = now + timedelta(seconds=self.delays[attempt])
                self.db.record_delivery(
                    delivery.id, status=DeliveryStatus.PENDING, http_status=status, error=error, next_at=next_at
                )
            else:
                self.db.record_delivery(
                    delivery.id, status=DeliveryStatus.FAILED, http_status=status, error=error, next_at=None
                )
                log.warning("callback %s to %s failed after %d attempts", delivery.kind, delivery.id, attempt + 1)
        return delivered

    def _payload(self, owner: str, kind: str, record_id: int) -> object:
        if kind == DeliveryKind.TUNE:
            tune = self.db.get_tune(owner, record_id)
            return tune.to_dict() if tune else {"id": record_id, "deleted": True}
        if kind == DeliveryKind.PROMPT:
            prompt = self.db.get_prompt(owner, record_id)
            return prompt.to_dict() if prompt else {"id": record_id, "deleted": True}
        prompts = self.db.list_prompts(owner, tune_id=record_id, limit=10_000, offset=0)
        return [prompt.to_dict() for prompt in reversed(prompts)]


def deliver_in_background(sender: CallbackSender, stop: threading.Event, *, every_s: float = 1.0) -> threading.Thread:
    """Deliver due callbacks every `every_s` seconds from a daemon thread until `stop` is set: a receiver that
    hangs holds up nothing else (the web process runs one; a worker thread of a test process runs its own)."""

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                sender.deliver_due()
            except Exception:
                log.exception("callback delivery error")

    thread = threading.Thread(target=loop, name="tunes-callbacks", daemon=True)
    thread.start()
    return thread
