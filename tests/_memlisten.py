"""A listener of in-memory streams and websocket clients over it: `RpcServer.serve` without
sockets, so its tests run on trio's MockClock (``autojump_clock``) and assert exact times.

Two clients: `open_client` (trio-websocket's, for well-behaved traffic) and `open_raw_client`
(`RawClient` writes frames itself, so it can send what a websocket library will not, such as a
text frame that is not UTF-8, and never read what the server sends).

Real sockets would misfire the autojump: the kernel moves their bytes while every task looks
blocked to trio, and the clock jumps to the next deadline. Memory streams move bytes only
through trio tasks, so "every task is blocked" means nothing more can happen before a timer.
"""

from __future__ import annotations

import errno
import math
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, final

import attrs
import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream

#: Makes a connected (client end, server end) pair of streams.
PairFactory = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]


@attrs.define(eq=False)
class _BytePipe:
    """One direction of `bounded_stream_pair`."""

    capacity: int
    data: bytearray = attrs.field(factory=bytearray)
    sender_closed: bool = False
    receiver_closed: bool = False
    changed: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)


@final
@attrs.define(eq=False)
class _PipeSendStream(trio.abc.SendStream):
    pipe: _BytePipe

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        pipe = self.pipe
        await trio.lowlevel.checkpoint_if_cancelled()
        if pipe.sender_closed:
            raise trio.ClosedResourceError("this side is closed")
        if pipe.receiver_closed:
            raise trio.BrokenResourceError("the other side is closed")
        pipe.data += data  # written: a cancel from here on leaves it written, as on a socket
        pipe.changed.unpark_all()
        while len(pipe.data) > pipe.capacity and not (pipe.sender_closed or pipe.receiver_closed):
            await pipe.changed.park()
        await trio.lowlevel.cancel_shielded_checkpoint()
        if pipe.sender_closed:
            raise trio.ClosedResourceError("this side is closed")
        if len(pipe.data) > pipe.capacity:
            raise trio.BrokenResourceError("the other side is closed")

    async def wait_send_all_might_not_block(self) -> None:
        pipe = self.pipe
        while len(pipe.data) > pipe.capacity and not (pipe.sender_closed or pipe.receiver_closed):
            await pipe.changed.park()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.pipe.sender_closed = True
        self.pipe.changed.unpark_all()
        await trio.lowlevel.checkpoint()


@final
@attrs.define(eq=False)
class _PipeReceiveStream(trio.abc.ReceiveStream):
    pipe: _BytePipe

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        pipe = self.pipe
        await trio.lowlevel.checkpoint_if_cancelled()
        while not (pipe.data or pipe.sender_closed or pipe.receiver_closed):
            await pipe.changed.park()
        await trio.lowlevel.cancel_shielded_checkpoint()
        if pipe.receiver_closed:
            raise trio.ClosedResourceError("this side is closed")
        got = bytes(pipe.data[:max_bytes])
        del pipe.data[:max_bytes]
        pipe.changed.unpark_all()
        return got  # b"" once the sender closed and everything was read: EOF

    async def aclose(self) -> None:
        self.pipe.receiver_closed = True
        self.pipe.changed.unpark_all()
        await trio.lowlevel.checkpoint()


def bounded_stream_pair(
    capacity_bytes: int = 0,
) -> tuple[trio.StapledStream[Any, Any], trio.StapledStream[Any, Any]]:
    """A connected pair of in-memory streams that buffer at most ``capacity_bytes`` bytes
    each way, like a socket with full kernel buffers: `send_all` writes its data and waits
    until the reader has left at most ``capacity_bytes`` of it unread. With 0 (the default)
    every send waits until the other side has read it all.

    Unlike `trio.testing.lockstep_stream_pair` (whose next send fails an assertion after a
    cancelled one), a cancelled `send_all` leaves its data written and the stream usable, as
    a socket's does.
    """
    forward, backward = _BytePipe(capacity_bytes), _BytePipe(capacity_bytes)
    return (
        trio.StapledStream(_PipeSendStream(forward), _PipeReceiveStream(backward)),
        trio.StapledStream(_PipeSendStream(backward), _PipeReceiveStream(forward)),
    )


@final
@attrs.define(eq=False, repr=False)
class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A `trio.abc.Listener` whose `accept` returns the server ends of `connect`'s pairs.

    Args:
        make_pair: `trio.testing.memory_stream_pair` (the default: unbounded buffers, a send
            never waits) or `bounded_stream_pair` (a send waits while the other side does
            not read, as on a socket whose buffers are full).
        name: What ``repr`` says, and so what the server reports as its address.

    Connections `connect` made that nobody accepted (a backlog, unbounded) are closed with the
    listener, so their clients read EOF. `connect` on a closed listener raises
    ``ConnectionRefusedError``, as a TCP connect to a closed port does.
    """

    make_pair: PairFactory = trio.testing.memory_stream_pair
    name: str = "memory"
    accepted: int = attrs.field(init=False, default=0)
    closed: bool = attrs.field(init=False, default=False)
    _send: trio.MemorySendChannel[trio.abc.Stream] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[trio.abc.Stream] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    def __repr__(self) -> str:
        return self.name

    async def connect(self) -> trio.abc.Stream:
        """Queue a new connection for `accept`; return the client's end of it.

        Raises:
            ConnectionRefusedError: if the listener is closed.
        """
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{self.name} listener is closed")
        client, server = self.make_pair()
        self._send.send_nowait(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        """The server's end of the next connection; waits for one.

        Raises:
            trio.ClosedResourceError: if the listener is (or gets) closed.
        """
        try:
            stream = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError(f"{self.name} listener is closed") from None
        self.accepted += 1
        return stream

    async def aclose(self) -> None:
        """Close the listener and every connection still waiting to be accepted. Idempotent."""
        if not self.closed:
            self.closed = True
            self._send.close()  # a waiting `accept` wakes up with EndOfChannel
            backlog: list[trio.abc.Stream] = []
            while True:
                try:
                    backlog.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self._receive.close()
            for stream in backlog:
                await trio.aclose_forcefully(stream)
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_client(
    listener: MemoryListener, headers: list[tuple[bytes, bytes]], *, close_timeout_s: float = 2.0
) -> AsyncIterator[WebSocketConnection]:
    """A websocket client connected through ``listener``, handshake done (``GET /`` with
    ``headers``).

    Not `trio_websocket.open_websocket`: it leaks the client stream when the server closes
    first (its ``aclose()`` returns early once a close reason is set). The stream is ours here,
    closed on the way out after a close handshake of at most ``close_timeout_s`` seconds.

    Raises:
        trio_websocket.ConnectionRejected: if the server refuses the upgrade.
        ConnectionRefusedError: if the listener is closed.
    """
    stream = await listener.connect()
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]  # any trio Stream works
                "localhost",
                "/",
                extra_headers=headers,
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(close_timeout_s, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


def frame(payload: bytes, *, opcode: int = 0x1, fin: bool = True) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients; the zero mask)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 2**16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


@attrs.define
class RawClient:
    """A websocket client that reads only when asked to (`read_frame`)."""

    stream: trio.abc.Stream
    buffer: bytes = b""

    async def read_frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload). Server frames are not masked.

        Raises:
            EOFError: if the server closed the stream first.
        """
        while True:
            if len(self.buffer) >= 2:
                n = self.buffer[1] & 0x7F
                start = 2
                if n == 126:
                    n, start = struct.unpack("!H", self.buffer[2:4])[0], 4
                elif n == 127:
                    n, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
                if len(self.buffer) >= start + n:
                    opcode, payload = self.buffer[0] & 0x0F, self.buffer[start : start + n]
                    self.buffer = self.buffer[start + n :]
                    return opcode, payload
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the server closed the stream")
            self.buffer += data


@asynccontextmanager
async def open_raw_client(listener: MemoryListener, token: str) -> AsyncIterator[RawClient]:
    """A `RawClient` through ``listener``, upgraded with ``Authorization: Bearer <token>``."""
    stream = await listener.connect()
    try:
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n"
        )
        client = RawClient(stream)
        while b"\r\n\r\n" not in client.buffer:
            data = await stream.receive_some(4096)
            if not data:
                raise EOFError("the server closed the stream during the upgrade")
            client.buffer += data
        head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        yield client
    finally:
        await trio.aclose_forcefully(stream)
