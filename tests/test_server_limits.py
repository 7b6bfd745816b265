"""The websocket's limits, seen from a raw socket: bytes on the wire, 1007, backpressure.

A raw client (`RawClient`) writes websocket frames itself, so it can send what a websocket
library will not (a text frame that is not UTF-8) and never read what the server sends.
"""

from __future__ import annotations

import gc
import json
import os
import struct
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from mtpoold._server import RpcServer

from _fakepool import FakeMeta, FakePool, FakeResult

TOKEN = "test-token-0123456789"


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


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg, ensure_ascii=False).encode()


@attrs.define
class RawClient:
    stream: trio.SocketStream
    buffer: bytes = b""

    async def read_frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload). Server frames are not masked."""
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
                raise EOFError("the server closed the TCP connection")
            self.buffer += data


@asynccontextmanager
async def raw_client(address: str) -> AsyncIterator[RawClient]:
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
        )
        client = RawClient(stream)
        while b"\r\n\r\n" not in client.buffer:
            client.buffer += await stream.receive_some(4096)
        head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        yield client
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def served(pool: Any = None, **kw: Any) -> AsyncIterator[tuple[RpcServer, str]]:
    """A server on a free loopback port: (server, its address)."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = RpcServer(FakePool() if pool is None else pool, TOKEN, "127.0.0.1:0", **kw)
            address = await nursery.start(server.run)
            yield server, address
            nursery.cancel_scope.cancel()


def close_code(payload: bytes) -> int:
    return int(struct.unpack("!H", payload[:2])[0])


# --- UTF-8 and the frame limit ----------------------------------------------------------------


async def test_text_frame_that_is_not_utf8_gets_a_1007_close_frame() -> None:
    async with served() as (_, address):
        async with raw_client(address) as other:
            await other.stream.send_all(frame(request(1, "ping")))
            assert (await other.read_frame())[0] == 0x1
            async with raw_client(address) as client:
                await client.stream.send_all(frame(b'{"jsonrpc": "2.0", "id": "\xff"}'))
                opcode, payload = await client.read_frame()
                assert (opcode, close_code(payload)) == (0x8, 1007)
            # also split across continuation frames, the bad byte in the second one
            async with raw_client(address) as client:
                await client.stream.send_all(frame(b'{"id": "\xc3', fin=False))
                await client.stream.send_all(frame(b'("}', opcode=0x0))
                opcode, payload = await client.read_frame()
                assert (opcode, close_code(payload)) == (0x8, 1007)
            await other.stream.send_all(frame(request(2, "ping")))  # the others carry on
            assert json.loads((await other.read_frame())[1])["id"] == 2


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])  # 1, 2, 3 and 4 bytes in UTF-8
async def test_max_frame_bytes_counts_utf8_bytes_not_characters(char: str) -> None:
    text = request(1, "ping", {"pad": char * 40}).decode()
    size = len(text.encode())
    async with served(max_frame_bytes=size) as (_, address):
        async with raw_client(address) as client:  # exactly at the limit: answered
            await client.stream.send_all(frame(text.encode()))
            opcode, payload = await client.read_frame()
            assert opcode == 0x1 and json.loads(payload)["error"]["code"] == -32602
        async with raw_client(address) as client:  # one byte over it: 1009
            over = request(1, "ping", {"pad": char * 40 + "b"})
            await client.stream.send_all(frame(over))
            opcode, payload = await client.read_frame()
            assert (opcode, close_code(payload)) == (0x8, 1009)
        async with raw_client(address) as client:  # in two frames, as one message
            half = len(text.encode()) // 2
            await client.stream.send_all(frame(over[:half], fin=False))
            await client.stream.send_all(frame(over[half:], opcode=0x0))
            opcode, payload = await client.read_frame()
            assert (opcode, close_code(payload)) == (0x8, 1009)


# --- backpressure: a client that never reads ----------------------------------------------------

#: The bound README.md states, in MiB: what the daemon's Python heap may grow by while one
#: client sends 50,000 jobs and reads none of the replies, with the default max_in_flight
#: of 1,000 (measured: about 5 MiB; 4-5 MB per 1,000 unread jobs, without bound, before
#: backpressure counted unsent replies).
UNREAD_BOUND_MIB = 16


@attrs.define(eq=False)
class EchoPool(FakePool):
    """Answers every invoke at once with 2 KiB and keeps no record (the memory measured is
    the server's). Replies of 2 KiB fill the kernel's socket buffers (a few MiB on loopback)
    after a few thousand jobs, so most of the 50,000 meet a full socket."""

    answered: int = 0

    async def invoke(self, method: str, args: Any, **kw: Any) -> FakeResult:
        self.answered += 1
        await trio.lowlevel.checkpoint()
        return FakeResult({"_": method, "pad": _PAD, "args": args}, FakeMeta("a1", "k", 1, 0.1))


_PAD = "x" * 2048


async def test_client_that_never_reads_costs_bounded_memory_and_others_are_served() -> None:
    pool = EchoPool()
    async with served(pool) as (server, address):
        async with raw_client(address) as other:
            # warm up both paths once, so lazily built things are in the baseline
            await other.stream.send_all(frame(request(0, "invoke", {"method": "echo"})))
            await other.read_frame()
            jobs = [
                frame(request(i, "invoke", {"method": "echo", "args": {"i": i}}))
                for i in range(1, 50_001)
            ]
            batches = [b"".join(jobs[i : i + 50]) for i in range(0, len(jobs), 50)]
            del jobs
            gc.collect()
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                async with raw_client(address) as flooder:
                    sent = 0
                    for batch in batches:  # 50 jobs a write
                        with trio.move_on_after(1) as stalled:
                            await flooder.stream.send_all(batch)
                        if stalled.cancelled_caught:
                            break  # the server stopped reading us: backpressure
                        sent += 50
                    # let the server run until it stops reading (its request count settles)
                    last, same = -1, 0
                    while same < 5:
                        await trio.sleep(0.2)
                        now = server.statistics().requests
                        same, last = (same + 1, now) if now == last else (0, now)
                    current, peak = tracemalloc.get_traced_memory()
                    growth_mib = (peak - baseline) / 2**20
                    # another connection is answered at once
                    with trio.fail_after(5):
                        await other.stream.send_all(frame(request(1, "ping")))
                        reply = json.loads((await other.read_frame())[1])
                    assert reply["id"] == 1 and reply["result"]["pong"] is True
            finally:
                tracemalloc.stop()
            print(
                f"sent={sent} read={server.statistics().requests} jobs={pool.answered}"
                f" heap_growth={growth_mib:.1f} MiB (bound {UNREAD_BOUND_MIB} MiB)"
                f" rss={_rss_mib():.0f} MiB"
            )
            assert growth_mib < UNREAD_BOUND_MIB
            assert pool.answered < 50_000  # the rest was never read


def _rss_mib() -> float:
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
