"""Overlapping the stages of a load on separate threads, with bounded memory between them.

A load has three kinds of work: the driver decoding rows from the server, Python converting and
checking each batch, and Parquet encoding row groups. The first and last spend their time in
C++ with the GIL released, so running them on their own threads lets them use a second core
while the server uses another. Every hand-off is a bounded queue: a slow stage holds the faster
ones back instead of letting batches pile up in memory.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1


class _Done:
    """Marks the end of a stream in a queue."""


class _Failed:
    """Carries an exception from the producing thread to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterable[T], depth: int, name: str = "read-ahead") -> Generator[T]:
    """The items of `items`, produced on a background thread up to `depth` items ahead.

    An error in the producer is raised to the consumer at the point it happened. Closing the
    generator early (an error downstream, a `break`) stops the producer after the item it is
    working on and waits for it, so nothing touches `items` once this generator is closed.
    """
    if depth < 1:
        raise ValueError("read-ahead depth must be at least 1")
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as error:
            offer(_Failed(error))
            return
        offer(_Done())

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item = handoff.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # pyright: ignore[reportReturnType] - only T, _Done or _Failed are queued
    finally:
        stop.set()
        producer.join()


class BackgroundWorker(Generic[T]):
    """Runs `work(item)` for each submitted item on one thread, in order, one item queued ahead.

    `submit` blocks while the worker is busy and one item already waits, so at most two items
    are alive at once. A failure in `work` is raised by the next `submit` or by `finish`.
    """

    def __init__(self, work: Callable[[T], None], name: str = "background") -> None:
        self._work = work
        self._handoff: queue.Queue[object] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> None:
        """Queue `item`, waiting while the worker is busy and the queue is full."""
        while True:
            self._raise_failure()
            try:
                self._handoff.put(item, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return

    def finish(self) -> None:
        """Wait for every submitted item to be done; raise the worker's failure, if any."""
        self._stop()
        self._raise_failure()

    def cancel(self) -> None:
        """Stop after the current item, dropping any queued one."""
        with contextlib.suppress(queue.Empty):
            self._handoff.get_nowait()
        self._stop()

    def _stop(self) -> None:
        if not self._thread.is_alive():
            return
        while self._thread.is_alive():
            try:
                self._handoff.put(_Done(), timeout=_POLL_SECONDS)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            item = self._handoff.get()
            if isinstance(item, _Done):
                return
            if self._error is not None:
                continue
            try:
                self._work(item)  # pyright: ignore[reportArgumentType] - only T or _Done queued
            except BaseException as error:
                self._error = error
