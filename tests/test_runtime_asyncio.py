"""asyncio runtime idioms the conformance suite cannot see: task cancellation."""

import asyncio
import contextlib

import sansquic_asyncio

import sansquic


async def _echo(conn: sansquic_asyncio.Connection) -> None:
    async for stream in conn:
        data = bytearray()
        while chunk := await stream.receive():
            data += chunk
        await stream.send(bytes(data))
        await stream.finish()


def test_a_cancelled_receive_leaves_nothing_behind_and_the_connection_works() -> None:
    async def scenario() -> None:
        config = sansquic.Config(dev_mode=True, trust_dev_certificate=True)
        server = await sansquic_asyncio.serve(_echo, "127.0.0.1", 0, config=config)
        async with await sansquic_asyncio.connect(
            "127.0.0.1", server.address[1], config=config, server_name="localhost"
        ) as conn:
            silent = await conn.open_stream()
            waiting = asyncio.create_task(silent.receive())
            await asyncio.sleep(0.1)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            assert waiting.cancelled()
            assert not conn._driver.backend._waiters.get(("read", conn._core, silent.id))
            stream = await conn.open_stream()
            await stream.send(b"still fine")
            await stream.finish()
            assert await asyncio.wait_for(stream.receive(), 5) == b"still fine"
        await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
