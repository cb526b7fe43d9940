"""Micro-batching: concurrent callers share model calls; errors reach every caller of a batch."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ticket_triage.service.batching import MicroBatcher


class SlowModel:
    def __init__(self, seconds=0.02, fail=False):
        self.seconds, self.fail, self.batches, self.threads = seconds, fail, [], set()

    def __call__(self, texts, batch_size):
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(texts))
        time.sleep(self.seconds)  # the event loop must stay free meanwhile
        if self.fail:
            raise ValueError("boom")
        return [t.upper() for t in texts]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_batched_in_order_off_the_loop():
    model = SlowModel()

    async def main():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=20)
        await batcher.start()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.002)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        results = await asyncio.gather(*(batcher.submit([f"t{i}", f"u{i}"]) for i in range(10)))
        tick_task.cancel()
        await batcher.stop()
        return results, ticks

    results, ticks = run(main())
    assert results == [[f"T{i}", f"U{i}"] for i in range(10)]
    assert all(len(b) <= 8 for b in model.batches) and sum(map(len, model.batches)) == 20
    assert len(model.batches) <= 4  # 20 texts in batches of up to 8, not 20 calls
    assert model.threads == {"triage-model_0"}
    assert ticks >= 2  # the loop kept running while the model worked


def test_batch_size_one_is_one_call_per_text():
    model = SlowModel(seconds=0)

    async def main():
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=50)
        await batcher.start()
        await asyncio.gather(*(batcher.submit([str(i)]) for i in range(5)))
        await batcher.stop()

    run(main())
    assert [len(b) for b in model.batches] == [1] * 5


def test_a_failing_batch_fails_each_caller_and_the_batcher_goes_on():
    model = SlowModel(seconds=0, fail=True)

    async def main():
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=10)
        await batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(["a"]) for _ in range(3)), return_exceptions=True)
        model.fail = False
        after = await batcher.submit(["b"])
        await batcher.stop()
        return outcomes, after

    outcomes, after = run(main())
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert after == ["B"]


def test_one_bad_text_does_not_fail_its_batch_neighbours():
    def model(texts, n):
        if "bad" in texts:
            raise ValueError("cannot read 'bad'")
        return [t.upper() for t in texts]

    async def main():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=30)
        await batcher.start()
        outcomes = await asyncio.gather(
            batcher.submit(["a"]), batcher.submit(["bad"]), batcher.submit(["c"]), return_exceptions=True
        )
        await batcher.stop()
        return outcomes

    a, bad, c = run(main())
    assert a == ["A"] and c == ["C"] and isinstance(bad, ValueError)


def test_items_of_callers_that_went_away_are_dropped_or_kept_as_asked():
    seen: list[list[str]] = []

    def work(items, n):
        seen.append(list(items))
        return items

    async def main(skip: bool):
        batcher = MicroBatcher(work, max_batch_size=8, max_wait_ms=50, skip_cancelled=skip)
        await batcher.start()
        gone = asyncio.create_task(batcher.submit(["gone"]))
        await asyncio.sleep(0)  # queued, and the batch is still gathering
        gone.cancel()
        kept = await batcher.submit(["kept"])
        await batcher.stop()
        return kept

    assert run(main(skip=True)) == ["kept"] and seen == [["kept"]]
    seen.clear()
    assert run(main(skip=False)) == ["kept"] and seen == [["gone", "kept"]]  # e.g. a ticket is stored anyway


def test_wrong_number_of_predictions_is_an_error():
    async def main():
        batcher = MicroBatcher(lambda texts, n: texts[:-1], max_batch_size=4, max_wait_ms=1)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="model batch returned 0 results for 1 items"):
                await batcher.submit(["a", "b"])
        finally:
            await batcher.stop()

    run(main())


def test_service_batches_concurrent_tickets(make_client, fake_classifier):
    client = make_client(max_batch_size=16, max_wait_ms=200)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        codes = list(
            pool.map(lambda i: client.post("/v1/tickets", json={"body": f"card fee {i}"}).status_code, range(16))
        )
    assert codes == [201] * 16
    assert max(fake_classifier.batches) > 1
    assert "triage_batch_size_count" in client.get("/metrics").text
