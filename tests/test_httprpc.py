"""JSON-RPC over HTTP POST (`mtpoold._httprpc`) on `RpcServer.serve`: in-memory streams
(tests/_memlisten.py), the fake pool (tests/_fakepool.py), the autojump clock; the client side
is h11, the server's own HTTP parser, writing what a client would (and what it should not)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mtpoold._httprpc import split_batch
from mtpoold._rpc import MAX_JSON_DEPTH
from mtpoold._server import RpcServer

from _fakepool import FakePool
from _memlisten import MemoryListener

TOKEN = "test-token-0123456789"
AUTH = (b"Authorization", b"Bearer " + TOKEN.encode())
JSON_TYPE = (b"Content-Type", b"application/json")


@attrs.define
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: Any  # the decoded JSON


@attrs.define(eq=False)
class HttpClient:
    """One HTTP/1.1 connection to the server, spoken with h11."""

    stream: trio.abc.Stream
    conn: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.CLIENT))

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def request(
        self,
        body: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        method: bytes = b"POST",
        target: bytes = b"/rpc",
    ) -> None:
        fields = [(b"Host", b"mtpoold"), *(headers if headers is not None else [AUTH, JSON_TYPE])]
        if not any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in fields):
            fields.append((b"Content-Length", str(len(body)).encode()))
        await self.send(h11.Request(method=method, target=target, headers=fields))
        await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def response(self) -> Reply:
        status, headers, body = 0, {}, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return Reply(status, headers, json.loads(body))
            else:
                raise AssertionError(event)

    async def closed(self) -> bool:
        """Whether the server closed the connection (reads what is left)."""
        while data := await self.stream.receive_some(65536):
            del data
        return True


@attrs.define
class Harness:
    pool: FakePool
    server: RpcServer
    listener: MemoryListener

    @asynccontextmanager
    async def client(self) -> AsyncIterator[HttpClient]:
        stream = await self.listener.connect()
        try:
            yield HttpClient(stream)
        finally:
            await stream.aclose()

    async def post(self, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        async with self.client() as c:
            await c.request(body, headers)
            return await c.response()


@asynccontextmanager
async def served(pool: FakePool | None = None, **kw: Any) -> AsyncIterator[Harness]:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            pool = FakePool() if pool is None else pool
            h = Harness(pool, RpcServer(pool, TOKEN, **kw), MemoryListener())
            await nursery.start(h.server.serve, [h.listener])
            yield h
            nursery.cancel_scope.cancel()


def req(request_id: Any, method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def refused(reply: Reply, status: int, error_class: str) -> None:
    assert reply.status == status, reply
    assert reply.headers[b"content-type"] == b"application/json"
    error = reply.body["error"]
    assert reply.body["id"] is None
    assert (error["code"], error["data"]["class"]) == (-32600, error_class), reply


# --- the ordinary path ----------------------------------------------------------------------------


async def test_post_one_request_then_another_on_the_kept_alive_connection() -> None:
    async with served() as h, h.client() as c:
        await c.request(json.dumps(req(1, "ping")).encode())
        first = await c.response()
        assert first.status == 200 and first.body["id"] == 1
        assert first.body["result"]["pong"] is True
        assert b"connection" not in first.headers
        params = {"method": "echo", "args": {"x": 1}, "options": {"deadline_ms": 500}}
        await c.request(json.dumps(req("two", "invoke", params)).encode())
        second = await c.response()
        assert second.status == 200
        assert second.body == {
            "jsonrpc": "2.0",
            "id": "two",
            "result": {
                "result": {"_": "echo", "args": {"x": 1}},
                "meta": {
                    "account": "a1",
                    "proxy_key": "no_proxy",
                    "attempts": 1,
                    "elapsed_ms": 12.5,
                    "shared": False,
                    "merged": 1,
                    "age_s": 0.0,
                },
            },
        }
        assert h.pool.calls[0][2]["deadline_s"] == 0.5
        assert h.server.statistics().requests == 2


async def test_post_a_batch_answers_every_request_once_with_job_errors_as_on_the_websocket() -> (
    None
):
    async with served() as h:
        batch = [
            req(1, "invoke", {"method": "echo"}),
            req(2, "invoke", {"method": "fail:FLOOD_WAIT"}),
            req(3, "no.such_method"),
            {"jsonrpc": "2.0", "method": "ping"},  # no id
            req(5, "resolve", {"link_or_username": "@x", "options": {"deadline_ms": -1}}),
        ]
        reply = await h.post(batch)
        assert reply.status == 200
        by_id = {r["id"]: r for r in reply.body}
        assert len(reply.body) == 5 and set(by_id) == {1, 2, 3, None, 5}
        assert by_id[1]["result"]["result"]["_"] == "echo"
        flood = by_id[2]["error"]
        assert flood["code"] == -32001 and flood["data"]["class"] == "FLOOD_WAIT"
        assert flood["data"]["retry_after_s"] == 37.0
        assert by_id[3]["error"]["code"] == -32601
        assert by_id[None]["error"]["code"] == -32600
        assert by_id[5]["error"]["message"].startswith("params.options.deadline_ms: expected > 0")


async def test_post_numbers_of_any_size_are_invalid_argument_never_an_internal_error() -> None:
    # shared case 002 at the HTTP door, one body and in a batch: every numeric parameter of
    # any size JSON allows is INVALID_ARGUMENT naming it; past Python's int/str limit (4300
    # digits) the body is not JSON we read (400, -32700); never -32603
    huge, endless = "1" + "0" * 400, "1" + "0" * 5000
    invoke = '{"jsonrpc":"2.0","id":%d,"method":"invoke","params":{"method":"echo","args":{},'
    bodies = {
        1: invoke % 1 + '"options":{"deadline_ms":' + huge + "}}}",
        2: invoke % 2 + '"options":{"deadline_ms":1e400}}}',
        3: invoke % 3 + '"options":{"max_age_s":' + huge + "}}}",
        4: '{"jsonrpc":"2.0","id":4,"method":"get_messages","params":{"peer":' + huge + "}}",
        5: '{"jsonrpc":"2.0","id":5,"method":"get_messages","params":{"peer":"p","ids":[1e400]}}',
        6: '{"jsonrpc":"2.0","id":6,"method":"status","params":{"summary":' + huge + "}}",
    }
    named = {
        1: "params.options.deadline_ms: expected at most 2**53",
        2: "params.options.deadline_ms: expected at most 2**53",
        3: "params.options.max_age_s: expected a finite number >= 0",
        4: "params.peer: expected a string or an integer",
        5: "params.ids[0]: expected an integer",
        6: "params.summary: expected true or false",
    }
    async with served() as h:
        for request_id, body in bodies.items():
            reply = await h.post(body.encode())
            assert reply.status == 200, reply
            error = reply.body["error"]
            assert (error["code"], error["data"]["class"]) == (-32602, "INVALID_ARGUMENT")
            assert error["message"].startswith(named[request_id]), error
        reply = await h.post(("[" + ",".join(bodies.values()) + "]").encode())
        assert reply.status == 200
        by_id = {r["id"]: r["error"] for r in reply.body}
        assert len(reply.body) == len(named)
        for request_id, prefix in named.items():
            assert by_id[request_id]["message"].startswith(prefix), by_id[request_id]
        for body in ('{"id":7,"x":' + endless + "}", '[{"id":7,"x":' + endless + "}]"):
            reply = await h.post(body.encode())  # the documented rule of `mtpoold._rpc`
            assert (reply.status, reply.body["error"]["code"]) == (400, -32700), reply
            assert "an integer of more than 4300 digits" in reply.body["error"]["message"]
        assert (await h.post(req(8, "ping"))).status == 200


async def test_post_bad_json_empty_batch_and_not_a_request_are_400_with_a_jsonrpc_error() -> None:
    async with served() as h:
        bad = await h.post(b'{"jsonrpc": "2.0", "id": 1, "method": ')
        assert bad.status == 400 and bad.body["error"]["code"] == -32700
        assert (await h.post(b"NaN")).body["error"]["code"] == -32700
        empty = await h.post([])
        assert empty.status == 400 and empty.body["error"]["code"] == -32600
        notarequest = await h.post({"hello": 1})
        assert notarequest.status == 400 and notarequest.body["error"]["code"] == -32600
        # a broken array is one body that is not JSON, not a batch of one
        broken = await h.post(b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"},')
        assert broken.status == 400 and broken.body["error"]["code"] == -32700
        # the daemon keeps serving
        assert (await h.post(req(1, "ping"))).status == 200


async def test_a_lone_surrogate_or_cesu_8_in_a_body_is_400_not_a_dropped_connection() -> None:
    """``"\\ud800"`` is valid JSON syntax but no text: echoed in a reply it could not be
    encoded, and the connection crashed without an answer (single request and batch)."""
    async with served() as h:
        for body in (
            b'{"jsonrpc": "2.0", "id": "\\ud800", "method": "ping"}',
            b'{"jsonrpc": "2.0", "id": "\xed\xa0\x80", "method": "ping"}',
        ):
            reply = await h.post(body)
            assert reply.status == 400 and reply.body["error"]["code"] == -32700, reply
        batch = await h.post(b'[{"jsonrpc": "2.0", "id": "\\udfff", "method": "ping"}]')
        assert batch.status == 200 and batch.body[0]["error"]["code"] == -32700, batch
        assert (await h.post(req("\U0001f600", "ping"))).body["id"] == "\U0001f600"


def test_split_batch_cuts_elements_as_written() -> None:
    assert split_batch(b'{"a": 1}') is None
    assert split_batch(b" [ ] ") == []
    assert split_batch(b'[{"id": 1e400}, 12345678901234567890 ,"x"]') == [
        '{"id": 1e400}',
        "12345678901234567890",
        '"x"',
    ]
    assert split_batch(b"[1, 2") is None
    assert split_batch(b"[1] 2") is None
    assert split_batch(b'[{"method": "\xff"}]') is None


# --- the door -------------------------------------------------------------------------------------


async def test_post_without_or_with_a_wrong_token_or_a_foreign_origin_is_refused() -> None:
    async with served(allowed_origins=("https://ok.example",)) as h:
        missing = await h.post(req(1, "ping"), [JSON_TYPE])
        refused(missing, 401, "UNAUTHORIZED")
        assert missing.headers[b"www-authenticate"] == b"Bearer"
        assert missing.body["error"]["message"] == "missing bearer token"
        wrong = await h.post(req(1, "ping"), [JSON_TYPE, (b"Authorization", b"Bearer nope")])
        refused(wrong, 401, "UNAUTHORIZED")
        assert TOKEN not in json.dumps(wrong.body)
        foreign = await h.post(req(1, "ping"), [AUTH, JSON_TYPE, (b"Origin", b"https://evil")])
        refused(foreign, 403, "ORIGIN_NOT_ALLOWED")
        allowed = await h.post(
            req(1, "ping"), [AUTH, JSON_TYPE, (b"Origin", b"https://ok.example")]
        )
        assert allowed.status == 200
        assert h.pool.started == 0
        assert h.server.statistics().rejected_handshakes == 3


async def test_wrong_path_method_and_content_type_are_refused() -> None:
    async with served() as h:
        async with h.client() as c:
            await c.request(b"{}", target=b"/metrics")
            refused(await c.response(), 404, "NOT_FOUND")
            assert await c.closed()
        async with h.client() as c:
            await c.request(b"", [AUTH], method=b"GET", target=b"/")
            reply = await c.response()
            refused(reply, 405, "METHOD_NOT_ALLOWED")
            assert reply.headers[b"allow"] == b"POST"
        text = await h.post(req(1, "ping"), [AUTH, (b"Content-Type", b"text/plain")])
        refused(text, 415, "UNSUPPORTED_MEDIA_TYPE")
        # parameters of the media type are fine
        utf8 = await h.post(
            req(1, "ping"), [AUTH, (b"Content-Type", b"application/json; charset=utf-8")]
        )
        assert utf8.status == 200
        async with h.client() as c:
            await c.stream.send_all(b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n")
            raw = bytearray()
            while data := await c.stream.receive_some(65536):
                raw += data
            assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]["data"]["class"] == "BAD_HTTP"


async def test_a_body_over_max_frame_bytes_is_413_declared_or_chunked() -> None:
    async with served(max_frame_bytes=150) as h:
        fits = json.dumps(req(1, "invoke", {"method": "echo", "args": {"s": "x" * 30}})).encode()
        assert len(fits) <= 150
        assert (await h.post(fits)).status == 200
        big = json.dumps(req(1, "invoke", {"method": "echo", "args": {"s": "x" * 100}})).encode()
        refused(await h.post(big), 413, "BODY_TOO_LARGE")
        async with h.client() as c:
            headers = [AUTH, JSON_TYPE, (b"Transfer-Encoding", b"chunked")]
            await c.send(
                h11.Request(method=b"POST", target=b"/", headers=[(b"Host", b"x"), *headers])
            )
            for _ in range(3):
                await c.send(h11.Data(data=b" " * 60))
            refused(await c.response(), 413, "BODY_TOO_LARGE")
        assert h.pool.started == 1


async def test_a_slow_client_gets_408_after_handshake_timeout_s(autojump_clock: Any) -> None:
    async with served(handshake_timeout_s=3.0) as h:
        async with h.client() as c:
            start = trio.current_time()
            headers = [(b"Host", b"x"), AUTH, JSON_TYPE, (b"Content-Length", b"50")]
            await c.send(h11.Request(method=b"POST", target=b"/rpc", headers=headers))
            await c.send(h11.Data(data=b'{"jsonrpc": '))
            reply = await c.response()
            refused(reply, 408, "REQUEST_TIMEOUT")
            assert trio.current_time() - start == pytest.approx(3.0)
        async with h.client() as c:  # half a head
            await c.stream.send_all(b"POST /rpc HTTP/1.1\r\nHost: x\r\n")
            raw = bytearray()
            while data := await c.stream.receive_some(65536):
                raw += data
            assert raw.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        async with h.client() as c:  # kept alive, then idle: closed without a reply
            await c.request(json.dumps(req(1, "ping")).encode())
            assert (await c.response()).status == 200
            start = trio.current_time()
            assert await c.stream.receive_some(65536) == b""
            assert trio.current_time() - start == pytest.approx(3.0)


# --- limits, disconnects, shutdown ----------------------------------------------------------------


async def test_max_in_flight_counts_the_jobs_of_one_body() -> None:
    async with served(max_in_flight=2) as h:
        batch = [req(i, "invoke", {"method": "wait"}) for i in (1, 2, 3)] + [req(4, "status")]

        async def release() -> None:
            await h.pool.wait_waiting(2)
            h.pool.release.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(release)
            reply = await h.post(batch)
        by_id = {r["id"]: r for r in reply.body}
        assert "result" in by_id[1] and "result" in by_id[2] and "result" in by_id[4]
        assert by_id[3]["error"]["code"] == -32005
        assert h.server.statistics().in_flight == 0


async def test_a_client_that_disconnects_cancels_its_jobs() -> None:
    async with served() as h:
        async with h.client() as c:
            await c.request(
                json.dumps([req(1, "invoke", {"method": "hang"}), req(2, "ping")]).encode()
            )
            await h.pool.wait_waiting(1)
            assert h.server.statistics().in_flight == 1
        # the client closed its end
        while h.pool.cancelled == 0:  # noqa: ASYNC110 - the fake pool counts, no event for it
            await trio.sleep(0.01)
        assert h.pool.waiting == 0
        while h.server.statistics().connections:  # noqa: ASYNC110
            await trio.sleep(0.01)
        assert h.server.statistics().in_flight == 0
        assert (await h.post(req(3, "ping"))).status == 200


async def test_shutdown_answers_a_running_post_then_refuses_new_ones(autojump_clock: Any) -> None:
    async with served(shutdown_grace_s=5.0) as h:
        async with h.client() as c, trio.open_nursery() as nursery:
            await c.request(json.dumps(req(1, "invoke", {"method": "hang"})).encode())
            await h.pool.wait_waiting(1)
            start = trio.current_time()
            h.server.request_shutdown()
            reply = await c.response()
            assert trio.current_time() - start == pytest.approx(5.0)
            assert reply.status == 503
            assert reply.body["error"]["code"] == -32003
            assert reply.headers.get(b"connection") == b"close"
            nursery.cancel_scope.cancel()


async def read_all(stream: trio.abc.Stream) -> bytes:
    raw = bytearray()
    while data := await stream.receive_some(65536):
        raw += data
    return bytes(raw)


async def test_http_1_0_pipelining_100_continue_and_a_bad_length() -> None:
    ping = json.dumps(req(1, "ping")).encode()
    auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
    async with served() as h:
        async with h.client() as c:  # HTTP/1.0: answered, then closed
            await c.stream.send_all(
                b"POST /rpc HTTP/1.0\r\n" + auth + b"Content-Length: %d\r\n\r\n" % len(ping) + ping
            )
            raw = await read_all(c.stream)
            assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in raw
            assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["result"]["pong"] is True
        async with h.client() as c:  # two requests in one write: two replies, in order
            one = b"POST /rpc HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: %d\r\n\r\n"
            last = one.replace(b"Host: x", b"Host: x\r\nConnection: close")
            two = json.dumps(req(2, "ping")).encode()
            await c.stream.send_all(one % len(ping) + ping + last % len(two) + two)
            raw = await read_all(c.stream)
            assert raw.count(b"HTTP/1.1 200 ") == 2
            assert 0 < raw.index(b'"id":1,') < raw.index(b'"id":2,')
        async with h.client() as c:  # Expect: 100-continue gets its 100 first
            await c.stream.send_all(
                b"POST /rpc HTTP/1.1\r\nHost: x\r\n" + auth
                + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(ping)
            )  # fmt: skip
            first = await c.stream.receive_some(65536)
            assert first.startswith(b"HTTP/1.1 100 ")
            await c.stream.send_all(ping)
            raw = bytearray()
            while b'"pong"' not in raw:
                raw += await c.stream.receive_some(65536)
            assert raw.startswith(b"HTTP/1.1 200 ")
        async with h.client() as c:
            await c.stream.send_all(
                b"POST /rpc HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: x1\r\n\r\n"
            )
            assert (await read_all(c.stream)).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        async with h.client() as c:
            await c.stream.send_all(b"POST /rpc HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
            refused(await c.response(), 411, "LENGTH_REQUIRED")
        async with h.client() as c:
            # a head still incomplete past 16 KiB
            await c.stream.send_all(b"POST /rpc HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 20000)
            assert (await read_all(c.stream)).startswith(b"HTTP/1.1 431 ")
        assert h.server.statistics().requests == 4


_HEAD = b"POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
_INPUTS = st.one_of(
    st.binary(max_size=300),
    st.builds(  # a real head, then anything as the body
        lambda body, declared: (
            _HEAD
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % declared
            + body
        ),
        st.binary(max_size=200),
        st.integers(0, 250),
    ),
    st.builds(  # a real head and JSON-ish text
        lambda text: (
            _HEAD
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(text.encode())
            + text.encode()
        ),
        st.text(alphabet='[]{}",:0123456789-.eE truefalsnjsonrpcidmethodpg2\\u', max_size=120),
    ),
)


@settings(max_examples=60, deadline=None)
@given(data=_INPUTS)
def test_any_bytes_get_an_http_answer_or_a_close_never_a_crash(data: bytes) -> None:
    async def main() -> None:
        async with served() as h:
            async with h.client() as c:
                await c.stream.send_all(data)
                raw = await read_all(c.stream)  # the server answers or times out and closes
            assert raw == b"" or raw.startswith(b"HTTP/1.1 "), raw[:80]
            assert h.server.statistics().in_flight == 0
            assert (await h.post(req(1, "ping"))).status == 200

    logger = logging.getLogger("mtpoold.server")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.removeHandler(handler)
    assert not [r for r in seen if r.levelno >= logging.ERROR], [r.getMessage() for r in seen]


async def test_post_nesting_past_the_limit_is_minus_32700_alone_or_in_a_batch() -> None:
    # shared cases, a helper's re-run: an element nested ~1,010 deep sent the whole batch to
    # "batches are not supported" (the standard library's recursion limit in `split_batch`,
    # orjson's 1,024 levels in the dispatcher), and the ping beside it was never answered
    def nested(levels: int) -> str:
        return "[" * levels + "]" * levels

    def invoke(request_id: int, levels: int) -> str:
        args = '{"x":' + nested(levels) + "}"
        head = f'{{"jsonrpc":"2.0","id":{request_id},"method":"invoke",'
        return head + '"params":{"method":"echo","args":' + args + "}}"

    ping = '{"jsonrpc":"2.0","id":1,"method":"ping"}'
    too_deep = f"nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    async with served() as h:
        for levels in (MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 10, 1010, 3000):
            reply = await h.post(("[" + ping + "," + invoke(2, levels) + "]").encode())
            if levels < 990:  # the batch is cut into its elements: a reply each
                assert reply.status == 200, reply
                by_id = {r["id"]: r for r in reply.body}
                assert len(reply.body) == 2 and "result" in by_id[1]
                if levels > MAX_JSON_DEPTH:  # a parse error: its id is not read (null)
                    deep = by_id[None]
                    assert deep["error"]["code"] == -32700
                    assert deep["error"]["message"].endswith(too_deep)
                else:  # parsed: the echo client answers it
                    assert "result" in by_id[2], by_id
            else:  # too deep to cut: the body itself is refused, never "batches are not"
                assert (reply.status, reply.body["error"]["code"]) == (400, -32700), reply
                assert reply.body["error"]["message"].endswith(too_deep)
            alone = await h.post(invoke(3, levels).encode())
            if levels > MAX_JSON_DEPTH:
                assert alone.body["error"]["code"] == -32700, alone
                assert alone.body["error"]["message"].endswith(too_deep)
        assert (await h.post(req(9, "ping"))).status == 200


def test_split_batch_takes_json_whitespace_only() -> None:
    assert split_batch(b" \t\r\n[1 ,\n2]\n") == ["1", "2"]
    for space in ("\u00a0", "\u2028", "\u3000"):
        assert split_batch(f"[1,{space}2]".encode()) is None
        assert split_batch(f"{space}[1]".encode()) is None
        assert split_batch(f"[1]{space}".encode()) is None
