"""Requests through the server, well-formed and not, get the replies the full paths of
`mtpoold._rpc` give (the server reads frames and ``invoke``/``resolve`` params by the quick
paths where it can, tests/test_rpc_quick.py): each request exactly one reply, the same error
for a bad one, the same job handed to the pool for a good one."""

from __future__ import annotations

import json
from typing import Any

from test_server import recv, served

from mtpoold._rpc import _PARAMS, _PARAMS_OF, InvokeParams, RpcError, _full_loads, _request_of

_REQUESTS: list[tuple[str, Any]] = [
    ("invoke", {"method": "help.GetConfig"}),
    ("invoke", {"method": "help.GetConfig", "args": {"hash": 12345678901234567890}}),
    ("invoke", {"method": "echo", "args": None, "options": None}),
    ("invoke", {"method": "echo", "options": {"deadline_ms": 2500, "tags": ["a", "b"]}}),
    ("invoke", {"method": "echo", "options": {"deadline_ms": 1.5, "account": "a2"}}),
    ("invoke", {"method": "echo", "options": {"max_age_s": 30, "account": None}}),
    ("invoke", {"method": " "}),
    ("invoke", {"method": 5}),
    ("invoke", {"args": {}}),
    ("invoke", {"method": "echo", "args": []}),
    ("invoke", {"method": "echo", "extra": 1}),
    ("invoke", {"method": "echo", "options": {"deadline_ms": True}}),
    ("invoke", {"method": "echo", "options": {"deadline_ms": 0}}),
    ("invoke", {"method": "echo", "options": {"tags": [""]}}),
    ("invoke", {"method": "echo", "options": {"max_age_s": -1}}),
    ("invoke", {"method": "echo", "options": {"unknown": 1}}),
    ("resolve", {"link_or_username": "@name"}),
    ("resolve", {"link_or_username": "@name", "options": {"deadline_ms": 900}}),
    ("resolve", {"link_or_username": ""}),
    ("resolve", {"link_or_username": 7}),
]
_RAW: list[str] = [  # frames json.dumps would not write
    '{"jsonrpc":"2.0","id":%d,"method":"invoke","params":{"method":"echo",'
    '"options":{"deadline_ms":1e400}}}',
    '{"jsonrpc":"2.0","id":%d,"method":"invoke","params":{"method":"echo","args":{"n":NaN}}}',
    '{"jsonrpc":"2.0","id":%d,"method":"invoke","params":{"method":"\\ud800"}}',
    '{"jsonrpc":"2.0","id":%d,"method":"invoke","params":{"method":"echo","args":'
    '{"big":123456789012345678901234567890}}}',
]


def _frames() -> list[tuple[int, str]]:
    frames = [
        (i, json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
        for i, (method, params) in enumerate(_REQUESTS)
    ]
    frames += [(len(frames) + k, raw % (len(frames) + k)) for k, raw in enumerate(_RAW)]
    return frames


def _full_path(frame: str) -> tuple[str, Any]:
    """What the full paths make of ``frame``: ("error", code, message, the reply's id) or
    ("job", method, args, keyword arguments for the pool)."""
    try:
        request = _request_of(_full_loads(frame))
    except RpcError as exc:  # answered with the id when it could be read, else null
        return ("error", exc.code, exc.message, exc.request_id)
    params = request.params
    assert isinstance(params, dict)
    named = {k: v for k, v in params.items() if not (v is None and k in ("args", "options"))}
    obj, problem = _PARAMS.first_problem(named, _PARAMS_OF[request.method], "params")
    if problem is not None:
        return ("error", -32602, problem, request.id)
    o = obj.options
    kw: dict[str, Any] = {"deadline_s": o.deadline_s, "account": o.account, "tags": o.tags}
    if o.max_age_s > 0:
        kw["max_age_s"] = o.max_age_s
    if isinstance(obj, InvokeParams):
        return ("job", "invoke", (obj.method, obj.args), kw)
    return ("job", "resolve", (obj.link_or_username,), kw)


async def test_RpcServer_replies_as_the_full_paths_do() -> None:
    frames = _frames()
    async with served() as h, h.connect() as ws:
        for _, frame in frames:
            await ws.send_message(frame)
        replies: dict[int, dict[str, Any]] = {}
        unread_ids: list[tuple[int, str]] = []  # replies to requests whose id was not read
        for _ in frames:
            reply = await recv(ws)
            if reply["id"] is None:
                unread_ids.append((reply["error"]["code"], reply["error"]["message"]))
                continue
            assert reply["id"] not in replies  # exactly one reply each
            replies[reply["id"]] = reply
    calls: dict[tuple[str, str], list[Any]] = {}
    for kind, args, kw in h.pool.calls:
        calls.setdefault((kind, args[0]), []).append((args, kw))
    want_unread: list[tuple[int, str]] = []
    for i, frame in frames:
        want = _full_path(frame)
        if want[0] == "error":
            _, code, message, reply_id = want
            if reply_id is None:
                want_unread.append((code, message))
                continue
            assert reply_id == i
            error = replies.pop(i)["error"]
            assert (error["code"], error["message"]) == (code, message), frame
        else:
            assert "result" in replies.pop(i), frame
            _, kind, args, kw = want
            assert (args, kw) in calls[(kind, args[0])], frame
    assert replies == {}
    assert sorted(unread_ids) == sorted(want_unread)
    jobs = sum(1 for _, frame in frames if _full_path(frame)[0] == "job")
    assert len(h.pool.calls) == jobs
