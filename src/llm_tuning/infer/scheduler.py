"""The server's decode loop: one background thread runs the batch engine over every request in flight.

    scheduler = Scheduler(model, stop_ids, max_batch=16, max_queue=64)
    ticket = scheduler.submit(GenRequest(ids, "math", 64))   # QueueFull past max_queue waiting requests
    for token in ticket.tokens(): ...                         # then ticket.result

Requests wait in a FIFO until the running batch has room; they join it at the next step and leave it when
they end, when `ticket.stop` is set (a stop string, a client that hung up) or when their request's own
cancel flag is set. Tokens go to each ticket's queue as they are made; the request's thread decodes them.
Used by `llm_tuning.infer.engine` (`serve --engine batch`, the default).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from llm_tuning.models.batch_engine import BatchDecoder, GenRequest, GenResult

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More requests wait than --max_queue allows."""


class _Either:
    """Set when either event is: the request's own stop, or one its caller adds later (a client leaving)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = list(events)

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class Ticket:
    """One request's place in the scheduler: its tokens as they come, then its result (or the error)."""

    def __init__(self, request: GenRequest) -> None:
        self.stop = threading.Event()
        self.watch = _Either(self.stop) if request.cancel is None else _Either(self.stop, request.cancel)
        self.request = request
        self.request.cancel = self.watch  # type: ignore[assignment]  (anything with is_set() will do)
        self._items: queue.Queue[Any] = queue.Queue()
        self.result: GenResult | None = None

    def also_cancel_on(self, event: threading.Event) -> None:
        self.watch.events.append(event)

    def tokens(self) -> Iterator[int]:
        """The generated ids as they come; raises the decode loop's error if it failed on this row."""
        while True:
            item = self._items.get()
            if isinstance(item, int):
                yield item
            elif isinstance(item, GenResult):
                self.result = item
                return
            else:
                raise item

    def _put(self, item: Any) -> None:
        self._items.put(item)


class Scheduler:
    """Owns the model's decode loop; thread-safe `submit`."""

    def __init__(self, model: Any, stop_ids: Iterable[int], max_batch: int, max_queue: int) -> None:
        self.decoder = BatchDecoder(model, stop_ids)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.waiting: deque[Ticket] = deque()
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="decode-loop", daemon=True)
        self.thread.start()

    def submit(self, request: GenRequest) -> Ticket:
        ticket = Ticket(request)
        request.on_token = ticket._put
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(
                    f"the queue is full ({len(self.waiting)} waiting, --max_queue {self.max_queue})"
                )
            self.waiting.append(ticket)
            self.cond.notify()
        return ticket

    def stats(self) -> tuple[int, int]:
        """(requests decoding, requests waiting)."""
        with self.cond:
            return len(self.decoder), len(self.waiting)

    def _take(self) -> list[Ticket]:
        with self.cond:
            while not self.waiting and not len(self.decoder):
                self.cond.wait()
            joining = []
            while self.waiting and len(self.decoder) + len(joining) < self.max_batch:
                ticket = self.waiting.popleft()
                if ticket.watch.is_set():  # gone before it started
                    ticket._put(GenResult([], "cancelled"))
                else:
                    joining.append(ticket)
            return joining

    def _loop(self) -> None:
        while True:
            joining = self._take()
            try:
                self.decoder.add([(t, t.request) for t in joining])
                finished = self.decoder.step()
            except Exception as err:  # noqa: BLE001 - every row in flight gets the error; the loop goes on
                logger.exception("the decode loop failed")
                for ticket in {*joining, *(row.key for row in self.decoder.rows)}:
                    ticket._put(err)
                self.decoder.clear()
                continue
            for ticket, result in finished:
                ticket._put(result)
