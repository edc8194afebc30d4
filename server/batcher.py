"""Dynamic batching: concurrent requests are grouped into one ``predict`` call on a single model thread.

The event loop never runs model code. One asyncio task collects queued requests (up to
``max_batch_size``, waiting at most ``max_batch_delay`` after the first), drops the ones whose caller
gave up or whose deadline passed, and hands the rest to a one-thread executor. If the batched call
fails, every request is retried alone so that one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .metrics import ServerMetrics

log = logging.getLogger("stqa.server")

#: Runs a list of queries; returns one result per query plus seconds per named stage for the whole call.
BatchRunner = Callable[[Sequence[Any]], tuple[list[Any], dict[str, float]]]


class QueueFull(Exception):
    """The batch queue is at ``max_queue``: the caller should answer RESOURCE_EXHAUSTED."""


class Expired(Exception):
    """The request's deadline passed while it waited in the queue."""


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new work."""


@dataclass
class BatchResult:
    """What one request gets back: its own result and how its batch went."""

    value: Any
    batch_size: int
    queue_s: float
    stage_s: dict[str, float]


@dataclass
class _Item:
    query: Any
    deadline: float | None  # time.monotonic() value; None = no deadline
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Groups submitted queries into batches and runs them with ``runner`` on one dedicated thread."""

    def __init__(
        self,
        runner: BatchRunner,
        *,
        max_batch_size: int,
        max_batch_delay_s: float,
        max_queue: int,
        metrics: ServerMetrics | None = None,
        name: str = "model",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_batch_delay_s < 0:
            raise ValueError(f"max_batch_delay_s must be >= 0, got {max_batch_delay_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._runner = runner
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._metrics = metrics
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stqa-{name}")
        self._task: asyncio.Task | None = None
        self._closed = False

    def start(self) -> None:
        """Start the collecting task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stqa-batcher")

    @property
    def depth(self) -> int:
        """Requests waiting in the queue right now."""
        return self._queue.qsize()

    async def submit(self, query: Any, deadline: float | None = None) -> BatchResult:
        """Queue ``query`` and wait for its result.

        Raises QueueFull at capacity, Expired if ``deadline`` (monotonic seconds) passes before the
        forward, BatcherClosed while shutting down, and whatever the runner raised for this query alone.
        Cancelling the awaiting task removes the query from the next batch.
        """
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        item = _Item(query, deadline, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFull(f"the batch queue is full ({self._queue.maxsize} requests waiting)") from None
        self._set_depth()
        try:
            return await item.future
        finally:
            if not item.future.done():
                item.future.cancel()  # the caller went away: the batcher skips this item

    async def close(self) -> None:
        """Finish everything queued, then stop the task and the model thread."""
        self._closed = True
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._queue.qsize())

    async def _collect(self) -> list[_Item]:
        """One batch: block for the first item, then take more until full or the delay has passed."""
        batch = [await self._queue.get()]
        give_up_at = time.monotonic() + self.max_batch_delay_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        self._set_depth()
        return batch

    def _live(self, batch: list[_Item]) -> list[_Item]:
        """Drop items whose caller is gone or whose deadline passed (they must not cost a forward)."""
        now = time.monotonic()
        live = []
        for item in batch:
            if item.deadline is not None and item.deadline <= now:
                # Checked first: gRPC cancels a handler whose deadline passed, so an expired item's
                # future is usually cancelled already, and that is a deadline drop, not a cancellation.
                if not item.future.done():
                    item.future.set_exception(Expired("the deadline passed while the request was queued"))
                self._dropped("deadline")
            elif item.future.done():  # cancelled by the caller
                self._dropped("cancelled")
            else:
                live.append(item)
        return live

    def _dropped(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.dropped.labels(reason=reason).inc()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            try:
                live = self._live(batch)
                if live:
                    await self._forward(loop, live)
            except Exception as exc:  # a bug in the batcher itself: fail this batch, keep serving
                log.exception("batcher failed on a batch of %d", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _forward(self, loop: asyncio.AbstractEventLoop, live: list[_Item]) -> None:
        started = time.monotonic()
        queries = [item.query for item in live]
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(live))
        try:
            values, stages = await loop.run_in_executor(self._executor, self._runner, queries)
            if len(values) != len(live):
                raise RuntimeError(f"runner returned {len(values)} results for {len(live)} queries")
            outcomes: list[tuple[_Item, Any, BaseException | None, dict[str, float]]] = [
                (item, value, None, stages) for item, value in zip(live, values, strict=True)
            ]
        except Exception as batch_error:
            if len(live) == 1:
                outcomes = [(live[0], None, batch_error, {})]
            else:
                log.info("batch of %d failed (%s); retrying each request alone", len(live), batch_error)
                outcomes = [await self._forward_alone(loop, item) for item in live]
        for item, value, error, stages in outcomes:
            if item.future.done():
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(BatchResult(value, len(live), started - item.enqueued, stages))

    async def _forward_alone(self, loop: asyncio.AbstractEventLoop, item: _Item):
        try:
            (value,), stages = await loop.run_in_executor(self._executor, self._runner, [item.query])
            return item, value, None, stages
        except Exception as exc:
            return item, None, exc, {}
