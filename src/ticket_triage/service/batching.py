"""Micro-batching: concurrent requests share one call of a batch function.

Each item waits in an asyncio queue; one worker task takes the first item, waits up to
`max_wait_ms` for more (up to `max_batch_size`), then runs the whole batch in a single worker
thread (off the event loop, so the server keeps accepting requests while the batch runs).
While one batch runs, the next one gathers, so under load batches fill up by themselves.
Two batchers run in the service: one calls the model on texts, the other stores new tickets
in the database, a batch per transaction (writer.py).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from .tasks import cancel_and_wait

log = logging.getLogger("ticket_triage.service")


class MicroBatcher:
    def __init__(
        self,
        process: Callable[[list, int], Sequence],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "model",
        skip_cancelled: bool = True,
    ):
        self._process = process  # (items, len(items)) -> one result per item, in order
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000
        self._on_batch = on_batch
        self.name = name  # what a batch does, for logs and the thread's name
        # True: an item whose caller went away is dropped (no model time for nobody). False:
        # it is processed anyway (a ticket is stored even if its client hung up meanwhile).
        self.skip_cancelled = skip_cancelled
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"triage-{self.name}")
        self._task = asyncio.create_task(self._run(), name=f"triage-{self.name}-batcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._queue is not None:  # nobody will answer what is still waiting
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(RuntimeError("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, items: list) -> list:
        """The batch function's results for `items`, in order; raises what it raised."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, fut in zip(items, futures):
            self._queue.put_nowait((item, fut))
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            if self.skip_cancelled:
                batch = [(t, f) for t, f in batch if not f.cancelled()]  # the client went away
            if not batch:
                continue
            items = [item for item, _ in batch]
            started = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self._call, items)
            except Exception as exc:
                log.warning("%s batch of %d failed: %s", self.name, len(items), type(exc).__name__)
                await self._one_by_one(batch, exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(items), loop.time() - started)
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)

    def _call(self, items: list) -> list:
        results = list(self._process(items, len(items)))
        if len(results) != len(items):
            raise RuntimeError(f"the {self.name} batch returned {len(results)} results for {len(items)} items")
        return results

    async def _one_by_one(self, batch: list, exc: Exception) -> None:
        """A batch failed: retry each item alone, so one bad item cannot fail its neighbours'
        requests; if the model (or database) itself is down, every caller gets the error."""
        loop = asyncio.get_running_loop()
        if len(batch) == 1:
            _, fut = batch[0]
            if not fut.done():
                fut.set_exception(exc)
            return
        for item, fut in batch:
            try:
                (result,) = await loop.run_in_executor(self._executor, self._call, [item])
            except Exception as one_exc:
                if not fut.done():
                    fut.set_exception(one_exc)
            else:
                if not fut.done():
                    fut.set_result(result)
