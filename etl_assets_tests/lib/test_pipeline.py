import threading
import time
from collections.abc import Iterator

import pytest

from etl_assets.lib.pipeline import BackgroundWorker, read_ahead


class Counting:
    """An iterator that records how far it was pulled, and on which threads."""

    def __init__(self, items: int, fail_at: int | None = None) -> None:
        self.items = items
        self.fail_at = fail_at
        self.pulled = 0
        self.threads: set[str] = set()

    def __iter__(self) -> Iterator[int]:
        for item in range(self.items):
            self.threads.add(threading.current_thread().name)
            if item == self.fail_at:
                raise ValueError(f"failed at {item}")
            self.pulled += 1
            yield item


def test_read_ahead_yields_every_item_in_order_from_another_thread() -> None:
    source = Counting(50)
    assert list(read_ahead(source, depth=3, name="test-reader")) == list(range(50))
    assert source.threads == {"test-reader"}


def test_read_ahead_raises_the_producers_error_after_the_items_before_it() -> None:
    source = Counting(10, fail_at=4)
    received: list[int] = []
    with pytest.raises(ValueError, match="failed at 4"):
        received.extend(read_ahead(source, depth=2))
    assert received == [0, 1, 2, 3]


def test_closing_read_ahead_early_stops_the_producer_within_its_depth() -> None:
    source = Counting(1_000)
    items = read_ahead(source, depth=2)
    assert next(items) == 0
    items.close()
    pulled = source.pulled
    # One item handed over, two queued, one in the producer's hands at most.
    assert pulled <= 4
    time.sleep(0.3)
    assert source.pulled == pulled
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_read_ahead_needs_a_positive_depth() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(read_ahead(iter([1]), depth=0))


def test_a_background_worker_does_every_item_in_order_on_its_thread() -> None:
    done: list[tuple[int, str]] = []
    worker = BackgroundWorker[int](
        lambda item: done.append((item, threading.current_thread().name)), name="test-worker"
    )
    for item in range(20):
        worker.submit(item)
    worker.finish()
    assert done == [(item, "test-worker") for item in range(20)]


def test_a_background_worker_holds_at_most_one_item_waiting() -> None:
    release = threading.Event()
    started: list[int] = []

    def slow(item: int) -> None:
        started.append(item)
        release.wait(5)

    worker = BackgroundWorker[int](slow)
    worker.submit(1)  # taken by the worker, which then blocks
    worker.submit(2)  # waits in the queue
    blocked = threading.Thread(target=worker.submit, args=(3,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a third item must wait while one is busy and one queued"
    release.set()
    blocked.join(5)
    worker.finish()
    assert started == [1, 2, 3]


def test_a_background_workers_failure_is_raised_to_the_submitter() -> None:
    def fail_on_two(item: int) -> None:
        if item == 2:
            raise RuntimeError("encoding failed")

    def submit_all() -> None:
        worker = BackgroundWorker[int](fail_on_two)
        for item in range(100):
            worker.submit(item)
        worker.finish()

    with pytest.raises(RuntimeError, match="encoding failed"):
        submit_all()


def test_cancelling_a_background_worker_drops_what_waits() -> None:
    release = threading.Event()
    done: list[int] = []

    def slow(item: int) -> None:
        release.wait(5)
        done.append(item)

    worker = BackgroundWorker[int](slow)
    worker.submit(1)
    worker.submit(2)  # returns once the worker has taken item 1: item 2 waits in the queue
    cancelling = threading.Thread(target=worker.cancel)
    cancelling.start()
    time.sleep(0.2)
    release.set()
    cancelling.join(5)
    assert not cancelling.is_alive()
    assert done == [1]
