"""Background tasks stop even when a library turns their cancellation into an error of its own."""

from __future__ import annotations

import asyncio

from tiergate.background import reraise_if_stopping, stop


async def _library_call() -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:  # what redis-py did under load: the cancellation comes back as its own error
        raise ConnectionError("Timeout reading from server") from None


def test_a_loop_that_calls_reraise_if_stopping_ends_on_the_first_cancel():
    async def loop(errors: list) -> None:
        while True:
            try:
                await _library_call()
            except Exception as exc:  # as the refresher and watchers do
                reraise_if_stopping(exc)
                errors.append(exc)

    async def main() -> None:
        errors: list = []
        task = asyncio.create_task(loop(errors))
        await asyncio.sleep(0.01)
        await stop(task, timeout_s=5)
        assert task.cancelled() and errors == []

    asyncio.run(main())


def test_stop_cancels_again_a_task_that_swallowed_the_first_cancel():
    async def stubborn() -> None:
        converted = False
        while True:  # the pattern that hung close(): the error is caught and the loop sleeps again
            try:
                if converted:
                    await asyncio.sleep(10)  # the next await is a plain one: a second cancel lands
                else:
                    await _library_call()
            except Exception:
                converted = True

    async def main() -> None:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0.01)
        task.cancel()  # one cancel, as close() used to do: swallowed, the task goes on
        await asyncio.wait({task}, timeout=0.2)
        assert not task.done()
        await stop(task, timeout_s=5)  # cancels again until it ends
        assert task.done()

    asyncio.run(main())


def test_stop_gives_up_after_its_timeout_instead_of_hanging():
    async def immortal(released: asyncio.Event) -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    async def main() -> None:
        released = asyncio.Event()
        task = asyncio.create_task(immortal(released))
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await stop(task, timeout_s=0.3)
        assert 0.25 <= loop.time() - t0 < 2 and not task.done()
        released.set()  # let it end, so asyncio.run can finish
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        assert task.done()

    asyncio.run(main())
