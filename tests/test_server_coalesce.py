"""`_WebSocket.send_text`: replies that come while a write holds the stream go out together.

The server's end of a websocket over in-memory streams, wrapped so the test counts its
writes and can hold one open; the client is trio-websocket's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from mtpoold._server import _WebSocket, _wrap_server_stream


class CountedStream(trio.abc.Stream):
    """A stream that counts its writes; ``hold`` makes the next writes wait for ``release``."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes = 0
        self.gate: trio.Event | None = None
        self.holding = trio.Event()  # set once a held write waits

    def hold(self) -> None:
        self.gate = trio.Event()
        self.holding = trio.Event()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()
        self.gate = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.gate is not None:
            self.holding.set()
            await self.gate.wait()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[_WebSocket, WebSocketConnection, CountedStream]]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    counted = CountedStream(server_stream)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client: list[WebSocketConnection] = []
            connected = trio.Event()

            async def connect() -> None:
                client.append(await wrap_client_stream(nursery, client_stream, "x", "/"))
                connected.set()

            nursery.start_soon(connect)
            request = await _wrap_server_stream(nursery, counted, max_message_size=2**20)
            server = await request.accept()
            assert isinstance(server, _WebSocket)
            await connected.wait()
            counted.writes = 0  # count the replies' writes only
            yield server, client[0], counted
            nursery.cancel_scope.cancel()


async def test_replies_sent_together_arrive_in_order_in_fewer_writes() -> None:
    async with pair() as (server, client, counted):
        called: list[str] = []  # the order of the calls (trio runs new tasks in any order)

        async def send(text: str) -> None:
            called.append(text)
            await server.send_text(text)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(send, f"reply {i}")
        assert [await client.get_message() for _ in range(20)] == called
        assert 1 <= counted.writes < 20


async def test_a_writer_cancelled_before_its_write_leaves_its_batch_to_a_member() -> None:
    async with pair() as (server, client, counted):
        counted.hold()
        done: list[str] = []

        async def send(text: str) -> None:
            await server.send_text(text)
            done.append(text)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, "first")  # its write holds the stream
            await counted.holding.wait()
            writer_scope = trio.CancelScope()
            nursery.start_soon(_in_scope, writer_scope, server, "second")  # the next batch
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send, "third")  # joins the second one's batch
            await trio.testing.wait_all_tasks_blocked()
            writer_scope.cancel()  # the batch's writer goes before it wrote a byte
            await trio.testing.wait_all_tasks_blocked()
            counted.release()
        assert done == ["first", "third"]
        got = [await client.get_message() for _ in range(3)]
        assert got == ["first", "second", "third"]


async def _in_scope(scope: trio.CancelScope, server: _WebSocket, text: str) -> None:
    with scope:
        await server.send_text(text)


async def test_every_member_of_a_batch_is_told_when_the_connection_breaks() -> None:
    async with pair() as (server, _client, counted):
        counted.hold()
        outcomes: list[str] = []

        async def send(text: str) -> None:
            try:
                await server.send_text(text)
            except ConnectionClosed:
                outcomes.append(f"{text}: closed")
            else:
                outcomes.append(f"{text}: sent")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, "first")
            await counted.holding.wait()
            nursery.start_soon(send, "second")
            nursery.start_soon(send, "third")
            await trio.testing.wait_all_tasks_blocked()
            await counted.inner.aclose()  # the stream breaks under the held write
            counted.release()
        assert sorted(outcomes) == ["first: closed", "second: closed", "third: closed"]
        with pytest.raises(ConnectionClosed):
            await server.send_text("later")
