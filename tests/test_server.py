"""RpcServer.serve on in-memory streams (tests/_memlisten.py), against the fake pool
(tests/_fakepool.py); shutdown, grace, cancel and timeouts under the autojump clock, at exact
virtual times. A few tests run `RpcServer.run` itself on real TCP and unix sockets."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from mtpoold._server import (
    CLOSE_TIMEOUT_S,
    HANDSHAKE_TIMEOUT_S,
    SHUTDOWN_GRACE_S,
    RpcServer,
    ServerStatistics,
)

from _fakepool import FakePool
from _memlisten import MemoryListener, bounded_stream_pair, frame, open_client, open_raw_client

TOKEN = "test-token-0123456789"
AUTH = [(b"Authorization", b"Bearer " + TOKEN.encode())]


@attrs.define
class Harness:
    pool: FakePool
    server: RpcServer
    listener: MemoryListener
    address: str = ""
    stopped: trio.Event = attrs.field(factory=trio.Event)
    stopped_at: float | None = None  # trio time `serve` returned

    async def _serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await self.server.serve([self.listener], task_status=task_status)
        self.stopped_at = trio.current_time()
        self.stopped.set()

    def connect(
        self, headers: list[tuple[bytes, bytes]] | None = None
    ) -> contextlib.AbstractAsyncContextManager[WebSocketConnection]:
        return open_client(self.listener, AUTH if headers is None else headers)


@asynccontextmanager
async def served(
    pool: FakePool | None = None, *, listener: MemoryListener | None = None, **kw: Any
) -> AsyncIterator[Harness]:
    """`RpcServer.serve` on a `MemoryListener`, cancelled on the way out."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            pool = FakePool() if pool is None else pool
            listener = MemoryListener() if listener is None else listener
            h = Harness(pool, RpcServer(pool, TOKEN, **kw), listener)
            h.address = await nursery.start(h._serve)
            yield h
            nursery.cancel_scope.cancel()


async def handshake_status(h: Harness, headers: list[tuple[bytes, bytes]]) -> int:
    """Attempt an upgrade with ``headers``; return the HTTP status of the refusal."""
    with pytest.RaisesGroup(ConnectionRejected, allow_unwrapped=True) as caught:
        async with h.connect(headers):
            pass
    return caught.value.exceptions[0].status_code  # type: ignore[no-any-return]


async def send(ws: WebSocketConnection, request_id: Any, method: str, params: Any = None) -> None:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        msg["params"] = params
    await ws.send_message(json.dumps(msg))


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    reply = json.loads(await ws.get_message())
    assert reply["jsonrpc"] == "2.0"
    return reply  # type: ignore[no-any-return]


async def rpc(
    ws: WebSocketConnection, method: str, params: Any = None, request_id: Any = 1
) -> dict[str, Any]:
    await send(ws, request_id, method, params)
    return await recv(ws)


async def recv_until_closed(
    ws: WebSocketConnection, since: float
) -> tuple[dict[Any, tuple[float, dict[str, Any]]], int | None, float]:
    """Every reply until the server closes: ({id: (seconds after ``since``, reply)}, the
    close code, seconds after ``since`` the close came). Fails on a reply id seen twice."""
    replies: dict[Any, tuple[float, dict[str, Any]]] = {}
    while True:
        try:
            reply = await recv(ws)
        except ConnectionClosed as closed:
            code = closed.reason.code if closed.reason is not None else None
            return replies, code, trio.current_time() - since
        assert reply["id"] not in replies
        replies[reply["id"]] = (trio.current_time() - since, reply)


def error_of(reply: dict[str, Any]) -> tuple[int, str, str]:
    err = reply["error"]
    return err["code"], err["data"]["class"], err["message"]


# --- methods --------------------------------------------------------------------------------------


async def test_RpcServer_ping_and_status() -> None:
    async with served() as h, h.connect() as ws:
        reply = await rpc(ws, "ping", request_id="p")
        assert reply["id"] == "p"
        assert reply["result"]["pong"] is True
        assert isinstance(reply["result"]["time"], float)

        status = (await rpc(ws, "status", {}, request_id=2))["result"]
        assert status["uptime_s"] == 3725.0
        assert status["proxies"][0]["key"] == "0123456789abcdef"
        assert status["proxies"][0]["errors_by_class"] == {"FLOOD_WAIT": 2, "STREAM_CLOSED": 1}
        assert [a["id"] for a in status["accounts"]] == ["a1", "a2"]
        assert status["accounts"][0]["tags"] == ["main"]


async def test_RpcServer_invoke_returns_result_and_meta() -> None:
    async with served() as h, h.connect() as ws:
        reply = await rpc(
            ws,
            "invoke",
            {
                "method": "help.GetConfig",
                "args": {"x": 1},
                "options": {"deadline_ms": 1500, "account": "a2", "tags": ["main"]},
            },
            request_id=7,
        )
    assert reply == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {
            "result": {"_": "help.GetConfig", "args": {"x": 1}},
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
    assert h.pool.calls == [
        (
            "invoke",
            ("help.GetConfig", {"x": 1}),
            {"deadline_s": 1.5, "account": "a2", "tags": ("main",)},
        )
    ]


async def test_RpcServer_resolve_and_get_messages() -> None:
    async with served() as h, h.connect() as ws:
        r1 = await rpc(ws, "resolve", {"link_or_username": "@durov"}, request_id=1)
        r2 = await rpc(ws, "get_messages", {"peer": "durov", "ids": [1, 2]}, request_id=2)
        r3 = await rpc(ws, "get_messages", {"peer": -1001, "ids": [5]}, request_id=3)
    assert r1["result"]["result"] == {"_": "resolve", "args": ["@durov"]}
    assert r2["result"]["result"] == {"_": "get_messages", "args": ["durov", [1, 2]]}
    assert r3["result"]["meta"]["account"] == "a1"
    assert h.pool.calls[0] == (
        "resolve",
        ("@durov",),
        {"deadline_s": None, "account": None, "tags": ()},
    )
    assert h.pool.calls[2][1] == (-1001, [5])


async def test_RpcServer_accounts_disable_and_enable() -> None:
    async with served() as h, h.connect() as ws:
        r = await rpc(ws, "accounts.disable", {"id": "a2", "reason": "manual check"})
        assert r["result"] == {"account": "a2", "disabled": True, "reason": "manual check"}
        assert h.pool.disabled["a2"] == "manual check"
        status = (await rpc(ws, "status", request_id=2))["result"]
        assert status["accounts"][1]["disabled_reason"] == "manual check"

        r = await rpc(ws, "accounts.enable", {"id": "a2"}, request_id=3)
        assert r["result"] == {"account": "a2", "disabled": False}
        assert h.pool.disabled["a2"] is None

        r = await rpc(ws, "accounts.enable", {"id": "nope"}, request_id=4)
        assert error_of(r) == (-32602, "INVALID_ARGUMENT", "params.id: unknown account 'nope'")
        # without a reason: a disabled account keeps its reason, another gets the default
        r = await rpc(ws, "accounts.disable", {"id": "a1"}, request_id=5)
        assert r["result"] == {"account": "a1", "disabled": True, "reason": "disabled by operator"}
        h.pool.disabled["a2"] = "USER_DEACTIVATED: the session no longer works"
        r = await rpc(ws, "accounts.disable", {"id": "a2", "reason": None}, request_id=6)
        assert r["result"]["reason"] == "USER_DEACTIVATED: the session no longer works"
        # an account Telegram deactivated: refused without force, saying why
        r = await rpc(ws, "accounts.enable", {"id": "a2"}, request_id=7)
        code, error_class, message = error_of(r)
        assert (code, error_class) == (-32602, "INVALID_ARGUMENT")
        assert message == "params.force: account 'a2' was deactivated by Telegram"
        r = await rpc(ws, "accounts.enable", {"id": "a2", "force": True}, request_id=8)
        assert r["result"] == {"account": "a2", "disabled": False}
        r = await rpc(ws, "accounts.enable", {"id": "a2", "force": 1}, request_id=9)
        assert error_of(r)[2] == "params.force: expected a boolean (true or false), got 1"


async def test_RpcServer_accounts_cooldowns_and_clear_cooldown() -> None:
    async with served() as h, h.connect() as ws:
        r = await rpc(ws, "accounts.cooldowns", {"id": "a1"})
        (resolve,) = r["result"]["rate_classes"]
        assert resolve["rate_class"] == "resolve"
        assert resolve["budget_left"] == {"per_hour": 25, "per_day": 100}
        r = await rpc(ws, "accounts.clear_cooldown", {"id": "a1", "rate_class": "resolve"}, 2)
        assert r["result"] == {"account": "a1", "cleared": ["resolve"]}
        r = await rpc(ws, "accounts.clear_cooldown", {"id": "a1"}, request_id=3)
        assert r["result"] == {"account": "a1", "cleared": ["resolve"]}
        assert h.pool.cleared == [("a1", "resolve"), ("a1", None)]
        r = await rpc(ws, "accounts.clear_cooldown", {"id": "a1", "rate_class": "x"}, 4)
        assert error_of(r)[:2] == (-32602, "INVALID_ARGUMENT")
        assert "params.rate_class: no rate class 'x'" in error_of(r)[2]
        r = await rpc(ws, "accounts.cooldowns", {"id": "nope"}, request_id=5)
        assert error_of(r) == (-32602, "INVALID_ARGUMENT", "params.id: unknown account 'nope'")


async def test_RpcServer_accounts_forget_only_orphans() -> None:
    async with served() as h, h.connect() as ws:
        r = await rpc(ws, "accounts.forget", {"id": "a1"})
        assert error_of(r) == (
            -32602,
            "INVALID_ARGUMENT",
            "params.id: account 'a1' is in the config; remove it from the config first",
        )
        r = await rpc(ws, "accounts.forget", {"id": "old-1"}, request_id=2)
        assert r["result"] == {"account": "old-1", "forgotten": True}
        status = (await rpc(ws, "status", request_id=3))["result"]
        assert status["orphaned_accounts"] == []
        r = await rpc(ws, "accounts.forget", {"id": "old-1"}, request_id=4)
        assert error_of(r) == (
            -32602,
            "INVALID_ARGUMENT",
            "params.id: no account 'old-1' in the state store",
        )


async def test_RpcServer_reload_without_reloader_is_method_not_found() -> None:
    async with served() as h, h.connect() as ws:
        r = await rpc(ws, "reload")
        assert error_of(r)[:2] == (-32601, "METHOD_NOT_FOUND")


async def test_RpcServer_reload_answers_the_summary_or_every_problem() -> None:
    from mtpoold._errors import ConfigError

    outcomes: list[Any] = [
        ConfigError(["policy.max_attempts: must be >= 1", "accounts[2].proxy: no proxy"]),
        {"generation": 2, "added": ["a3"], "removed": [], "reconnected": []},
    ]

    async def reloader() -> Any:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async with served(reloader=reloader) as h, h.connect() as ws:
        r = await rpc(ws, "reload")
        assert r["error"]["code"] == -32006
        assert r["error"]["data"]["class"] == "CONFIG_INVALID"
        assert r["error"]["data"]["problems"] == [
            "policy.max_attempts: must be >= 1",
            "accounts[2].proxy: no proxy",
        ]
        assert r["error"]["message"] == (
            "config not reloaded (2 problems), still running on the previous one:"
            " policy.max_attempts: must be >= 1; accounts[2].proxy: no proxy"
        )
        r = await rpc(ws, "reload", {}, request_id=2)
        assert r["result"]["generation"] == 2


# --- job failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        ("FLOOD_WAIT", -32001),
        ("PEER_NOT_FOUND", -32001),
        ("NO_ACCOUNT_AVAILABLE", -32002),
        ("SHUTTING_DOWN", -32003),
        ("CANCELLED", -32004),
        ("INVALID_ARGUMENT", -32602),
    ],
)
async def test_RpcServer_job_failed_maps_to_error_object(error_class: str, code: int) -> None:
    async with served() as h, h.connect() as ws:
        reply = await rpc(ws, "invoke", {"method": f"fail:{error_class}"}, request_id="j")
    assert reply["id"] == "j"
    assert reply["error"] == {
        "code": code,
        "message": f"fake {error_class}",
        "data": {"class": error_class, "retry_after_s": 37.0, "account": "a1", "attempts": 2},
    }


async def test_RpcServer_exception_in_one_request_answers_internal_error_only() -> None:
    async with served() as h:
        async with h.connect() as ws, h.connect() as other:
            await send(ws, 1, "invoke", {"method": "wait"})
            await h.pool.wait_waiting(1)
            r = await rpc(ws, "invoke", {"method": "crash"}, request_id=2)
            assert error_of(r)[:2] == (-32603, "INTERNAL_ERROR")
            assert "boom" not in r["error"]["message"]
            r = await rpc(ws, "invoke", {"method": "unjsonable"}, request_id=3)
            assert error_of(r)[:2] == (-32603, "INTERNAL_ERROR")
            # the connection, its other job and the other connection are fine
            assert "result" in await rpc(ws, "ping", request_id=4)
            assert "result" in await rpc(other, "ping", request_id=1)
            h.pool.release.set()
            assert (await recv(ws))["id"] == 1


# --- protocol errors ------------------------------------------------------------------------------


async def test_RpcServer_parse_error_keeps_connection_open() -> None:
    async with served() as h, h.connect() as ws:
        await ws.send_message('{"id":')
        reply = await recv(ws)
        assert reply["id"] is None
        assert error_of(reply)[:2] == (-32700, "PARSE_ERROR")
        await ws.send_message(b"\xff\xfe not utf-8")
        assert error_of(await recv(ws))[0] == -32700
        assert "result" in await rpc(ws, "ping")


@pytest.mark.parametrize(
    ("frame", "reply_id", "message"),
    [
        ('{"id": 5, "method": "ping"}', 5, '"jsonrpc" must be "2.0"'),
        ('{"jsonrpc": "1.0", "id": "x", "method": "ping"}', "x", '"jsonrpc" must be "2.0"'),
        (
            '{"jsonrpc": "2.0", "method": "ping"}',
            None,
            'missing "id": notifications are not supported, every request needs an id',
        ),
        (
            '{"jsonrpc": "2.0", "id": true, "method": "ping"}',
            None,
            '"id" must be a string or an integer, got a boolean',
        ),
        (
            '{"jsonrpc": "2.0", "id": null, "method": "ping"}',
            None,
            '"id" must be a string or an integer, got null',
        ),
        ('{"jsonrpc": "2.0", "id": 3, "method": 4}', 3, '"method" must be a string, got a number'),
        (
            '{"jsonrpc": "2.0", "id": 3, "method": "ping", "params": 1}',
            3,
            '"params" must be an object or an array, got a number',
        ),
        (
            '[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]',
            None,
            "batches are not supported: send one request per frame",
        ),
        ("42", None, "a request must be a JSON object, got a number"),
    ],
)
async def test_RpcServer_invalid_request(frame: str, reply_id: Any, message: str) -> None:
    async with served() as h, h.connect() as ws:
        await ws.send_message(frame)
        reply = await recv(ws)
        assert reply["id"] == reply_id
        assert error_of(reply) == (-32600, "INVALID_REQUEST", message)
        assert "result" in await rpc(ws, "ping")  # still open
    assert h.pool.started == 0


async def test_RpcServer_unknown_method() -> None:
    async with served() as h, h.connect() as ws:
        reply = await rpc(ws, "messages.GetHistory", {}, request_id=9)
    code, cls, message = error_of(reply)
    assert (reply["id"], code, cls) == (9, -32601, "METHOD_NOT_FOUND")
    assert message.startswith("unknown method 'messages.GetHistory'; expected one of ")


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("invoke", {"args": {}}, "params.method: required"),
        ("invoke", {"method": 5}, "params.method: expected a string, got 5"),
        ("invoke", {"method": "x", "args": [1]}, "params.args: expected an object, got an array"),
        (
            "invoke",
            {"method": "x", "options": {"deadline_ms": "5"}},
            "params.options.deadline_ms: expected a number of milliseconds, got a string",
        ),
        (
            "invoke",
            {"method": "x", "options": {"deadline_ms": 0}},
            "params.options.deadline_ms: expected > 0, got 0",
        ),
        (
            "invoke",
            {"method": "x", "options": {"tags": ["a", 1]}},
            "params.options.tags[1]: expected a string, got 1",
        ),
        (
            "invoke",
            {"method": "x", "options": {"acount": "a"}},
            "params.options.acount: unknown parameter; expected account, deadline_ms, max_age_s,"
            " tags",
        ),
        (
            "invoke",
            {"method": "x", "arg": {}},
            "params.arg: unknown parameter; expected args, method, options",
        ),
        (
            "get_messages",
            {"peer": "p", "ids": ["x"]},
            "params.ids[0]: expected an integer, got a string",
        ),
        (
            "get_messages",
            {"peer": "p", "ids": 5},
            "params.ids: expected an array of integers, got 5",
        ),
        (
            "get_messages",
            {"peer": True, "ids": [1]},
            "params.peer: expected a string or an integer, got a boolean",
        ),
        (
            "resolve",
            {"link_or_username": ""},
            "params.link_or_username: expected a non-empty string",
        ),
        ("resolve", [1], "params: expected an object (named parameters), got an array"),
        ("cancel", {"id": 1.5}, "params.id: expected a request id (string or integer), got 1.5"),
        ("ping", {"x": 1}, "params.x: unknown parameter; expected none"),
    ],
)
async def test_RpcServer_invalid_params_name_the_param(
    method: str, params: Any, message: str
) -> None:
    async with served() as h, h.connect() as ws:
        reply = await rpc(ws, method, params, request_id=11)
    assert reply["id"] == 11
    assert error_of(reply) == (-32602, "INVALID_ARGUMENT", message)
    assert h.pool.started == 0


async def test_RpcServer_case_002_huge_deadline_ms_is_invalid_argument_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame = (
        '{"jsonrpc":"2.0","id":22,"method":"invoke","params":{"method":"help.GetConfig",'
        '"args":{},"options":{"deadline_ms":1' + "0" * 400 + "}}}"
    )
    async with served() as h, h.connect() as ws:
        await ws.send_message(frame)
        reply = await recv(ws)
        code, cls, message = error_of(reply)
        assert (reply["id"], code, cls) == (22, -32602, "INVALID_ARGUMENT")
        assert message.startswith("params.options.deadline_ms: expected at most 2**53")
        await ws.send_message(frame.replace("1" + "0" * 400, "1e400"))
        assert error_of(await recv(ws))[:2] == (-32602, "INVALID_ARGUMENT")
        assert "result" in await rpc(ws, "ping")
    assert h.pool.started == 0
    assert "request.crashed" not in caplog.text


async def test_RpcServer_oversized_frame_closes_only_that_connection_1009() -> None:
    async with served() as h:
        async with h.connect() as other:
            await send(other, 1, "invoke", {"method": "wait"})
            await h.pool.wait_waiting(1)
            big = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "invoke",
                    "params": {"method": "x" * 2_000_000},  # > 1 MiB
                }
            )

            async with h.connect() as ws:

                async def push() -> None:
                    try:
                        await ws.send_message(big)
                    except ConnectionClosed:
                        pass

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(push)
                    with pytest.raises(ConnectionClosed) as caught:
                        await ws.get_message()
                assert caught.value.reason is not None
                assert caught.value.reason.code == 1009

            assert h.pool.started == 1  # only the other connection's job
            assert "result" in await rpc(other, "ping", request_id=2)
            h.pool.release.set()
            assert (await recv(other))["id"] == 1
        async with h.connect() as fresh:  # still accepting
            assert "result" in await rpc(fresh, "ping")


# --- auth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([], 401),
        ([(b"Authorization", b"Bearer wrong-token")], 401),
        ([(b"Authorization", b"Basic " + TOKEN.encode())], 401),
        ([(b"Authorization", b"Bearer")], 401),
        (AUTH + [(b"Origin", b"https://evil.example")], 403),
        (AUTH + [(b"Origin", b"null")], 403),
    ],
)
async def test_RpcServer_refuses_handshake(headers: list[tuple[bytes, bytes]], status: int) -> None:
    async with served(allowed_origins=("https://ok.example",)) as h:
        assert await handshake_status(h, headers) == status
        assert h.server.statistics().rejected_handshakes == 1
        assert h.server.statistics().connections == 0


async def test_RpcServer_allowed_origin_accepted() -> None:
    async with served(allowed_origins=("https://ok.example",)) as h:
        async with h.connect(AUTH + [(b"Origin", b"https://ok.example")]) as ws:
            assert "result" in await rpc(ws, "ping")


# --- concurrency, limits, cancel ------------------------------------------------------------------


async def test_RpcServer_1000_pipelined_requests_each_answered_once() -> None:
    async with served() as h, h.connect() as ws:
        for i in range(1000):
            method = "wait" if i % 2 else "echo"
            await send(ws, i, "invoke", {"method": method, "args": {"i": i}})
        await h.pool.wait_waiting(500)
        assert h.server.statistics().in_flight >= 500  # + echo replies waiting for us to read
        h.pool.release.set()
        seen: list[int] = []
        for _ in range(1000):
            reply = await recv(ws)
            assert reply["result"]["result"]["args"] == {"i": reply["id"]}
            seen.append(reply["id"])
        assert sorted(seen) == list(range(1000))
        assert all(i % 2 == 0 for i in seen[:500])  # completion order: the quick ones first
        assert h.pool.started == 1000


async def test_RpcServer_in_flight_limit() -> None:
    async with served(max_in_flight=3) as h, h.connect() as ws:
        for i in range(3):
            await send(ws, i, "invoke", {"method": "wait"})
        await h.pool.wait_waiting(3)
        reply = await rpc(ws, "resolve", {"link_or_username": "x"}, request_id=3)
        code, cls, message = error_of(reply)
        assert (reply["id"], code, cls) == (3, -32005, "TOO_MANY_IN_FLIGHT")
        assert "limit 3" in message
        assert "result" in await rpc(ws, "ping", request_id="p")  # control methods still work
        h.pool.release.set()
        assert sorted([(await recv(ws))["id"] for _ in range(3)]) == [0, 1, 2]
        assert "result" in await rpc(ws, "invoke", {"method": "echo"}, request_id=4)
    assert h.pool.started == 4


async def test_RpcServer_cancel() -> None:
    async with served() as h, h.connect() as ws:
        await send(ws, "job", "invoke", {"method": "wait"})
        await h.pool.wait_waiting(1)
        await send(ws, "c", "cancel", {"id": "job"})
        replies = {r["id"]: r for r in [await recv(ws), await recv(ws)]}
        assert replies["c"]["result"] == {"cancelled": True}
        assert error_of(replies["job"]) == (-32004, "CANCELLED", "cancelled by a cancel request")
        assert h.pool.cancelled == 1
        r = await rpc(ws, "cancel", {"id": "job"}, request_id="c2")
        assert r["result"] == {"cancelled": False}
        assert h.server.statistics().in_flight == 0


async def test_RpcServer_cancel_is_per_connection() -> None:
    async with served() as h, h.connect() as ws, h.connect() as other:
        await send(ws, 1, "invoke", {"method": "wait"})
        await h.pool.wait_waiting(1)
        assert (await rpc(other, "cancel", {"id": 1}, request_id=2))["result"] == {
            "cancelled": False
        }
        # "1" is not 1
        assert (await rpc(ws, "cancel", {"id": "1"}, request_id=3))["result"] == {
            "cancelled": False
        }
        h.pool.release.set()
        assert "result" in await recv(ws)


async def test_RpcServer_duplicate_in_flight_id_rejected() -> None:
    async with served() as h, h.connect() as ws:
        await send(ws, 1, "invoke", {"method": "wait"})
        await h.pool.wait_waiting(1)
        reply = await rpc(ws, "invoke", {"method": "echo"}, request_id=1)
        assert error_of(reply) == (
            -32600,
            "INVALID_REQUEST",
            "id 1 is already in flight on this connection",
        )
        h.pool.release.set()
        assert "result" in await recv(ws)
        assert "result" in await rpc(ws, "invoke", {"method": "echo"}, request_id=1)  # free again


async def test_RpcServer_client_disconnect_cancels_its_jobs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with served() as h:
        async with h.connect() as ws:
            await send(ws, 1, "invoke", {"method": "hang"})
            await h.pool.wait_waiting(1)
            assert h.server.statistics() == ServerStatistics(
                address="memory",
                connections=1,
                in_flight=1,
                requests=1,
                rejected_handshakes=0,
                draining=False,
            )
            gone_at = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == gone_at  # at once, no timeout involved
        assert h.pool.cancelled == 1
        assert h.server.statistics().connections == 0
        assert h.server.statistics().in_flight == 0


async def test_RpcServer_handshake_timeout_closes_a_silent_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with served(handshake_timeout_s=3.0) as h:
        stream = await h.listener.connect()  # says nothing: no HTTP upgrade
        start = trio.current_time()
        assert await stream.receive_some() == b""  # the server hung up
        assert trio.current_time() - start == 3.0
        await stream.aclose()
        assert h.server.statistics().connections == 0
        async with h.connect() as ws:  # others are still welcome
            assert "result" in await rpc(ws, "ping")


def test_RpcServer_default_timeouts() -> None:
    """The virtual times the shutdown tests below assert follow from these."""
    assert (SHUTDOWN_GRACE_S, CLOSE_TIMEOUT_S, HANDSHAKE_TIMEOUT_S) == (10.0, 2.0, 10.0)
    assert RpcServer(FakePool(), TOKEN).shutdown_grace_s == SHUTDOWN_GRACE_S


# --- shutdown -------------------------------------------------------------------------------------


async def test_RpcServer_graceful_shutdown_answers_every_request_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with served() as h:  # shutdown_grace_s = SHUTDOWN_GRACE_S = 10.0
        async with h.connect() as ws:
            for i in range(6):
                await send(ws, i, "invoke", {"method": "wait" if i < 3 else "hang"})
            await h.pool.wait_waiting(6)
            shutdown_at = trio.current_time()
            h.server.request_shutdown()
            assert h.server.statistics().draining

            # new work on an open connection: refused at once
            reply = await rpc(ws, "invoke", {"method": "echo"}, request_id="late")
            assert error_of(reply)[:2] == (-32003, "SHUTTING_DOWN")
            # new connections: refused (the listener is closed)
            await trio.testing.wait_all_tasks_blocked()
            assert h.listener.closed
            with pytest.raises(ConnectionRefusedError):
                await h.listener.connect()
            assert trio.current_time() == shutdown_at

            h.pool.release.set()  # the "wait" jobs finish within the grace period
            replies, code, closed_after = await recv_until_closed(ws, shutdown_at)
        assert sorted(replies) == list(range(6))
        for i in range(3):
            after, reply = replies[i]
            assert "result" in reply
            assert after == 0.0
        for i in range(3, 6):  # cancelled when the grace runs out, exactly
            after, reply = replies[i]
            assert error_of(reply) == (-32003, "SHUTTING_DOWN", "the daemon is shutting down")
            assert after == 10.0
        assert (code, closed_after) == (1001, 10.0)
        await h.stopped.wait()
        assert h.stopped_at is not None and h.stopped_at - shutdown_at == 10.0
        assert h.pool.cancelled == 3
        assert h.server.statistics().in_flight == 0
        assert h.server.statistics().address is None


async def test_RpcServer_shutdown_ends_as_soon_as_the_last_job_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with served() as h:
        async with h.connect() as ws:
            await send(ws, 1, "invoke", {"method": "wait"})
            await h.pool.wait_waiting(1)
            shutdown_at = trio.current_time()
            h.server.request_shutdown()
            await trio.sleep(4.0)  # 4 s into the 10 s grace
            assert h.server.statistics().in_flight == 1
            h.pool.release.set()
            replies, code, closed_after = await recv_until_closed(ws, shutdown_at)
        assert replies[1][0] == 4.0 and "result" in replies[1][1]
        assert (code, closed_after) == (1001, 4.0)
        await h.stopped.wait()
        assert h.stopped_at == shutdown_at + 4.0


@pytest.mark.parametrize("before_shutdown", [False, True])
async def test_RpcServer_stop_now_ends_the_grace_and_answers_every_job_once(
    before_shutdown: bool, autojump_clock: trio.testing.MockClock
) -> None:
    async with served(shutdown_grace_s=60) as h:
        async with h.connect() as ws, h.connect() as other:
            for i in range(4):
                await send(ws if i % 2 else other, i, "invoke", {"method": "wait"})
            await h.pool.wait_waiting(4)
            start = trio.current_time()
            if before_shutdown:
                h.server.stop_now()  # implies request_shutdown
                stop_after = 0.0
            else:
                h.server.request_shutdown()
                await trio.sleep(5.0)
                assert h.server.statistics().in_flight == 4  # the grace period runs
                h.server.stop_now()
                h.server.stop_now()  # idempotent
                stop_after = 5.0
            replies: dict[Any, tuple[float, dict[str, Any]]] = {}
            for conn in (ws, other):
                got, code, closed_after = await recv_until_closed(conn, start)
                assert (code, closed_after) == (1001, stop_after)
                assert not replies.keys() & got.keys()
                replies |= got
        assert sorted(replies) == list(range(4))
        for after, reply in replies.values():
            assert error_of(reply) == (-32003, "SHUTTING_DOWN", "the daemon is shutting down")
            assert after == stop_after  # not the 60 s grace
        await h.stopped.wait()
        assert h.stopped_at == start + stop_after
        assert h.pool.cancelled == 4
        assert h.server.statistics().in_flight == 0


async def test_RpcServer_shutdown_when_idle_returns_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with served(shutdown_grace_s=60) as h:
        async with h.connect() as ws:
            assert "result" in await rpc(ws, "ping")
            start = trio.current_time()
            h.server.request_shutdown()
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        await h.stopped.wait()
        assert h.stopped_at == start


async def test_RpcServer_shutdown_of_a_client_that_never_reads_is_bounded(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply stuck in a send (the client does not read; no buffer on the stream)
    holds the shutdown for the grace, then CLOSE_TIMEOUT_S for the last replies, then
    CLOSE_TIMEOUT_S for the close handshake: 10 + 2 + 2 s, and not a second more."""
    listener = MemoryListener(make_pair=bounded_stream_pair)
    async with served(listener=listener) as h, open_raw_client(listener, TOKEN) as client:
        for i in (1, 2):
            await client.stream.send_all(frame(json.dumps(REQUEST | {"id": i}).encode()))
        await h.pool.wait_waiting(2)
        h.pool.release.set()  # both replies are sent; nobody reads them
        await trio.testing.wait_all_tasks_blocked()
        assert h.server.statistics().in_flight == 2
        start = trio.current_time()
        h.server.request_shutdown()
        await h.stopped.wait()
        assert h.stopped_at == start + SHUTDOWN_GRACE_S + 2 * CLOSE_TIMEOUT_S
        assert h.server.statistics().connections == 0
        assert h.server.statistics().in_flight == 0
    assert "connection.crashed" not in caplog.text


REQUEST: dict[str, Any] = {"jsonrpc": "2.0", "method": "invoke", "params": {"method": "wait"}}


# --- run(): real sockets --------------------------------------------------------------------------


@asynccontextmanager
async def running(listen: str) -> AsyncIterator[tuple[RpcServer, str, trio.Event]]:
    """`RpcServer.run` on ``listen``: (server, its address, set once `run` returned)."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = RpcServer(FakePool(), TOKEN, listen=listen)
            done = trio.Event()

            async def run(*, task_status: trio.TaskStatus[str]) -> None:
                await server.run(task_status=task_status)
                done.set()

            address = await nursery.start(run)
            yield server, address, done
            nursery.cancel_scope.cancel()


async def ping_over(stream: trio.abc.Stream, host: str) -> None:
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, host, "/", extra_headers=AUTH)  # type: ignore[arg-type]
            assert "result" in await rpc(ws, "ping")
            await ws.aclose()
    finally:
        await stream.aclose()


async def test_RpcServer_run_on_tcp() -> None:
    async with running("127.0.0.1:0") as (server, address, done):
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert server.statistics().address == address
        await ping_over(await trio.open_tcp_stream(host, int(port)), host)
        server.request_shutdown()
        await done.wait()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(host, int(port))
        assert server.statistics().address is None


async def test_RpcServer_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "mtpoold.sock"
    path.touch()
    with pytest.raises(OSError, match="exists and is not a socket"):
        await RpcServer(FakePool(), TOKEN, listen=f"unix:{path}").run()
    path.unlink()
    async with running(f"unix:{path}") as (server, address, done):
        assert address == f"unix:{path}"
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(OSError, match="another process is listening"):
            await RpcServer(FakePool(), TOKEN, listen=f"unix:{path}").run()
        await ping_over(await trio.open_unix_socket(str(path)), "localhost")
        server.request_shutdown()
        await done.wait()
        assert not path.exists()


async def test_RpcServer_replaces_stale_unix_socket(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # file left behind, nobody listening
    async with running(f"unix:{path}") as (_, address, _done):
        assert address == f"unix:{path}"


async def test_RpcServer_serve_needs_a_listener() -> None:
    with pytest.raises(ValueError, match=r"^serve needs at least one listener$"):
        await RpcServer(FakePool(), TOKEN).serve([])


async def test_RpcServer_validates_arguments() -> None:
    # The limits and the address are DaemonConfig's invariants; a bad address given
    # directly fails `run` before anything is bound.
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        await RpcServer(FakePool(), TOKEN, listen="nope").run()
    with pytest.raises(ValueError, match=r"^token must not be empty$"):
        RpcServer(FakePool(), "")
    assert TOKEN not in repr(RpcServer(FakePool(), TOKEN))
