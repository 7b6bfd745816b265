"""The websocket's limits, seen from a raw client: bytes on the wire, 1007, backpressure.

A raw client (`_memlisten.RawClient`) writes websocket frames itself, so it can send what a
websocket library will not (a text frame that is not UTF-8) and never read what the server
sends. The server serves on in-memory streams (`_memlisten.MemoryListener`); backpressure is
tested on streams without buffers (`_memlisten.bounded_stream_pair`) under the autojump clock.
"""

from __future__ import annotations

import gc
import json
import struct
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from mtpoold._server import RpcServer

from _fakepool import FakeMeta, FakePool, FakeResult
from _memlisten import MemoryListener, bounded_stream_pair, frame, open_raw_client

TOKEN = "test-token-0123456789"


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg, ensure_ascii=False).encode()


@asynccontextmanager
async def served(
    pool: Any = None, *, listener: MemoryListener | None = None, **kw: Any
) -> AsyncIterator[tuple[RpcServer, MemoryListener]]:
    """`RpcServer.serve` on a `MemoryListener`: (server, the listener)."""
    listener = MemoryListener() if listener is None else listener
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = RpcServer(FakePool() if pool is None else pool, TOKEN, **kw)
            await nursery.start(server.serve, [listener])
            yield server, listener
            nursery.cancel_scope.cancel()


def close_code(payload: bytes) -> int:
    return int(struct.unpack("!H", payload[:2])[0])


# --- UTF-8 and the frame limit ----------------------------------------------------------------


async def test_text_frame_that_is_not_utf8_gets_a_1007_close_frame() -> None:
    async with served() as (_, listener):
        async with open_raw_client(listener, TOKEN) as other:
            await other.stream.send_all(frame(request(1, "ping")))
            assert (await other.read_frame())[0] == 0x1
            async with open_raw_client(listener, TOKEN) as client:
                await client.stream.send_all(frame(b'{"jsonrpc": "2.0", "id": "\xff"}'))
                opcode, payload = await client.read_frame()
                assert (opcode, close_code(payload)) == (0x8, 1007)
            # also split across continuation frames, the bad byte in the second one
            async with open_raw_client(listener, TOKEN) as client:
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
    async with served(max_frame_bytes=size) as (_, listener):
        async with open_raw_client(listener, TOKEN) as client:  # exactly at the limit: answered
            await client.stream.send_all(frame(text.encode()))
            opcode, payload = await client.read_frame()
            assert opcode == 0x1 and json.loads(payload)["error"]["code"] == -32602
        async with open_raw_client(listener, TOKEN) as client:  # one byte over it: 1009
            over = request(1, "ping", {"pad": char * 40 + "b"})
            await client.stream.send_all(frame(over))
            opcode, payload = await client.read_frame()
            assert (opcode, close_code(payload)) == (0x8, 1009)
        async with open_raw_client(listener, TOKEN) as client:  # in two frames, as one message
            half = len(text.encode()) // 2
            await client.stream.send_all(frame(over[:half], fin=False))
            await client.stream.send_all(frame(over[half:], opcode=0x0))
            opcode, payload = await client.read_frame()
            assert (opcode, close_code(payload)) == (0x8, 1009)


async def test_requests_sent_at_once_and_in_pieces_are_answered_in_order() -> None:
    # The first messages may reach trio-websocket's queue before the server's reader takes
    # them straight from the reader task: every one is answered, in the order sent (control
    # methods are answered by the reader, in turn), a message in continuation frames too.
    async with served() as (_, listener):
        async with open_raw_client(listener, TOKEN) as client:
            second = request(2, "ping")
            await client.stream.send_all(
                frame(request(1, "ping"))
                + frame(second[:5], fin=False)
                + frame(second[5:], opcode=0x0)
                + frame(request(3, "ping"))
            )
            ids = []
            for _ in range(3):
                opcode, payload = await client.read_frame()
                assert opcode == 0x1
                ids.append(json.loads(payload)["id"])
            assert ids == [1, 2, 3]
            for i in (4, 5):  # and later ones, one at a time
                await client.stream.send_all(frame(request(i, "ping")))
                assert json.loads((await client.read_frame())[1])["id"] == i


# --- backpressure: a client that never reads ----------------------------------------------------

#: The bound README.md states, in MiB: what the daemon's Python heap may grow by while one
#: client sends 50,000 jobs and reads none of the replies, with the default max_in_flight
#: of 1,000 (4-5 MB per 1,000 unread jobs, without bound, before backpressure counted unsent
#: replies). On a stream without buffers all of it is the server's own: measured 9 MiB.
UNREAD_BOUND_MIB = 16


@attrs.define(eq=False)
class EchoPool(FakePool):
    """Answers every invoke at once with 2 KiB and keeps no record (the memory measured is
    the server's)."""

    answered: int = 0

    async def invoke(self, method: str, args: Any, **kw: Any) -> FakeResult:
        self.answered += 1
        await trio.lowlevel.checkpoint()
        return FakeResult({"_": method, "pad": _PAD, "args": args}, FakeMeta("a1", "k", 1, 0.1))


_PAD = "x" * 2048


def echo_frame(i: int) -> bytes:
    return frame(request(i, "invoke", {"method": "echo", "args": {"i": i}}))


async def test_client_that_never_reads_costs_bounded_memory_and_others_are_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = EchoPool()
    listener = MemoryListener(make_pair=bounded_stream_pair)  # no buffers: a full socket
    async with served(pool, listener=listener) as (server, _):
        async with open_raw_client(listener, TOKEN) as other:
            # warm up both paths once, so lazily built things are in the baseline
            await other.stream.send_all(frame(request(0, "invoke", {"method": "echo"})))
            await other.read_frame()
            gc.collect()
            requests_before = server.statistics().requests
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                async with open_raw_client(listener, TOKEN) as flooder, trio.open_nursery() as n:
                    sent = 0

                    async def flood() -> None:
                        nonlocal sent
                        for start in range(1, 50_001, 50):  # 50 jobs a write
                            await flooder.stream.send_all(
                                b"".join(
                                    frame(
                                        request(i, "invoke", {"method": "echo", "args": {"i": i}})
                                    )
                                    for i in range(start, start + 50)
                                )
                            )
                            sent += 50

                    n.start_soon(flood)
                    # until the server stops reading us: backpressure
                    await trio.testing.wait_all_tasks_blocked()
                    stalled_at = trio.current_time()
                    current, peak = tracemalloc.get_traced_memory()
                    growth_mib = (peak - baseline) / 2**20
                    # another connection is answered at once
                    await other.stream.send_all(frame(request(1, "ping")))
                    reply = json.loads((await other.read_frame())[1])
                    assert reply["id"] == 1 and reply["result"]["pong"] is True
                    assert trio.current_time() == stalled_at
                    read = server.statistics().requests - requests_before - 1  # not the ping
                    n.cancel_scope.cancel()
            finally:
                tracemalloc.stop()
            print(
                f"sent={sent} read={read} jobs={pool.answered}"
                f" heap_growth={growth_mib:.1f} MiB (bound {UNREAD_BOUND_MIB} MiB)"
            )
            assert growth_mib < UNREAD_BOUND_MIB
            # 1,000 jobs (the warm-up one was answered) wait with their replies; the next
            # request is answered -32005 by the reader, whose send waits too: nothing more
            # is read from that connection
            assert pool.answered == 1 + 1000
            assert read == 1000 + 1
            assert sent < 50_000
