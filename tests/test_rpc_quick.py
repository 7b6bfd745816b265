"""The quick paths of `mtpoold._rpc` give what the full paths give.

* `parse_request` reads a frame with orjson when it can (`_quick_loads`) and with the
  standard library otherwise (`_full_loads`): every frame gets the same `Request` or the same
  error either way.
* `parse_params` builds well-formed ``invoke`` and ``resolve`` params without the converter
  (`_quick_params`): whatever it builds equals what the converter builds, and whatever it
  leaves gets the full path's answer (the first problem, named).
* `encode_job_result` writes a job's reply with orjson: the same JSON as `encode_result`, and
  what orjson does not take goes to `encode_result`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtpoold._rpc import (
    _NOT_QUICK,
    _PARAMS,
    _PARAMS_OF,
    MAX_JSON_DEPTH,
    InvokeParams,
    JobOptions,
    ResolveParams,
    RpcError,
    _full_loads,
    _quick_loads,
    _quick_params,
    _request_of,
    encode_job_result,
    encode_result,
    parse_params,
    parse_request,
)


def _outcome(f: Any, *args: Any) -> object:
    try:
        return ("ok", f(*args))
    except RpcError as exc:
        return ("error", exc.code, exc.message, exc.error_class, exc.request_id)


def _full_request(frame: str | bytes) -> object:
    return _request_of(_full_loads(frame))


# --- parse_request --------------------------------------------------------------------------------

_FRAMES = [
    '{"jsonrpc":"2.0","id":1,"method":"invoke","params":{"method":"help.GetConfig"}}',
    '{"jsonrpc":"2.0","id":"x","method":"ping"}',
    '{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}',  # beyond 64 bits: exact
    '{"jsonrpc":"2.0","id":-9223372036854775809,"method":"ping"}',
    '{"jsonrpc":"2.0","id":1,"method":"invoke","params":{"args":{"hash":12345678901234567890}}}',
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":1e400}}',  # orjson refuses, json reads
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":NaN}}',
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":Infinity}}',
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"\\ud800"}}',
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"\\ud83d\\ude00"}}',
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"\\u0000"}}',
    '{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',  # the last one wins in both
    '{"jsonrpc":"2.0","id":1.0,"method":"ping"}',
    '{"jsonrpc":"2.0","id":true,"method":"ping"}',
    '{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}',
    '{"jsonrpc":"2.0","method":"ping"}',
    '{"jsonrpc":"1.0","id":1,"method":"ping"}',
    '[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
    '"just a string"',
    "\ufeff{}",
    "",
    " ",
    "{",
    '{"a":1}\x00',
    '"\x01"',
    "[" * 2000 + "]" * 2000,
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":-0.0,"m":1.5e-7,"k":0.1}}',
    "1" * 5000,
    b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"s":"\xff"}}',
    b"\xef\xbb\xbf{}",
]


@pytest.mark.parametrize("frame", _FRAMES)
def test_parse_request_quick_and_full_agree(frame: str | bytes) -> None:
    assert _outcome(parse_request, frame) == _outcome(_full_request, frame)


def test_parse_request_takes_the_quick_path_for_a_plain_request() -> None:
    assert _quick_loads(_FRAMES[0]) is not _NOT_QUICK
    # a long run of digits, or what orjson refuses, takes the standard library's
    assert _quick_loads(_FRAMES[2]) is _NOT_QUICK
    assert _quick_loads(_FRAMES[5]) is _NOT_QUICK


def test_parse_request_integers_beyond_64_bits_stay_exact() -> None:
    assert parse_request(_FRAMES[2]).id == 2**64
    params = parse_request(_FRAMES[4]).params
    assert isinstance(params, dict) and params["args"]["hash"] == 12345678901234567890


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    request_id=st.one_of(st.integers(), st.text(), st.none(), st.floats(allow_nan=False)),
    method=st.one_of(st.sampled_from(sorted(_PARAMS_OF)), st.text(), st.integers()),
    params=_json,
)
def test_parse_request_any_json_agrees(request_id: Any, method: Any, params: Any) -> None:
    frame = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    assert _outcome(parse_request, frame) == _outcome(_full_request, frame)
    encoded = frame.encode("utf-8", "surrogatepass")
    assert _outcome(parse_request, encoded) == _outcome(_full_request, encoded)


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_parse_request_any_frame_agrees(frame: bytes | str) -> None:
    assert _outcome(parse_request, frame) == _outcome(_full_request, frame)


# --- parse_params ---------------------------------------------------------------------------------


def _full_params(method: str, named: dict[str, Any]) -> object:
    obj, problem = _PARAMS.first_problem(named, _PARAMS_OF[method], "params")
    return ("ok", obj) if problem is None else ("problem", problem)


def _without_null_args_and_options(named: dict[str, Any]) -> dict[str, Any]:
    # what parse_params does first: a null ``args`` or ``options`` is an absent one
    return {k: v for k, v in named.items() if not (v is None and k in ("args", "options"))}


def test_quick_params_builds_the_plain_job_requests() -> None:
    named = {"method": "help.GetConfig", "args": {"a": [1]}}
    quick = _quick_params(InvokeParams, named)
    assert quick == InvokeParams(method="help.GetConfig", args={"a": [1]})
    assert isinstance(quick, InvokeParams) and quick.args is not named["args"]  # a copy
    options = {"deadline_ms": 1500, "account": "a1", "tags": ["eu", "x"], "max_age_s": 30}
    assert _quick_params(ResolveParams, {"link_or_username": "@x", "options": options}) == (
        ResolveParams(
            link_or_username="@x",
            options=JobOptions(deadline_s=1.5, account="a1", tags=("eu", "x"), max_age_s=30.0),
        )
    )


_option_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.floats(),
    st.text(max_size=3),
    st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
_options = st.one_of(
    _option_value,
    st.dictionaries(
        st.sampled_from(["deadline_ms", "account", "tags", "max_age_s", "deadline_s"]),
        _option_value,
        max_size=4,
    ),
)
_member = st.one_of(_option_value, _options)


@given(
    method=st.sampled_from(["invoke", "resolve", "get_messages", "status", "cancel"]),
    named=st.dictionaries(
        st.sampled_from(["method", "args", "options", "link_or_username", "peer", "extra"]),
        _member,
        max_size=4,
    ),
)
def test_quick_params_agrees_with_the_converter(method: str, named: dict[str, Any]) -> None:
    quick = _quick_params(_PARAMS_OF[method], named)
    if quick is not None:
        assert ("ok", quick) == _full_params(method, named)
    # and parse_params (quick or not) answers as the full path does
    try:
        got: object = ("ok", parse_params(method, named))
    except RpcError as exc:
        got = ("problem", exc.message)
    assert got == _full_params(method, _without_null_args_and_options(named))


@pytest.mark.parametrize(
    "named",
    [
        {"method": "help.GetConfig"},
        {"method": "help.GetConfig", "args": {}},
        {"method": "help.GetConfig", "options": {}},
        {"method": "help.GetConfig", "options": {"deadline_ms": 2.5, "tags": []}},
        {"method": "help.GetConfig", "options": {"account": None, "max_age_s": 0}},
        {"link_or_username": "t.me/x"},
    ],
)
def test_quick_params_takes_these(named: dict[str, Any]) -> None:
    cls = InvokeParams if "method" in named else ResolveParams
    quick = _quick_params(cls, named)
    assert quick is not None
    assert ("ok", quick) == _full_params("invoke" if cls is InvokeParams else "resolve", named)


@pytest.mark.parametrize(
    "named",
    [
        {"method": " "},  # the validator refuses it
        {"method": 5},
        {"args": {}},  # no method
        {"method": "x", "args": []},
        {"method": "x", "extra": 1},
        {"method": "x", "options": {"deadline_ms": True}},
        {"method": "x", "options": {"deadline_ms": 0}},
        {"method": "x", "options": {"deadline_ms": math.inf}},
        {"method": "x", "options": {"tags": ["", "x"]}},
        {"method": "x", "options": {"tags": [1]}},
        {"method": "x", "options": {"max_age_s": -1}},
        {"method": "x", "options": {"max_age_s": 2**65}},
        {"method": "x", "options": {"account": ""}},
        {"method": "x", "options": {"unknown": 1}},
        {"method": "x", "options": {"deadlin_ms": None}},  # a misspelt option, even null
        {"method": "x", "options": {"acount": None, "deadline_ms": 5}},
        {"method": "x", "options": []},
    ],
)
def test_quick_params_leaves_these_to_the_full_path(named: dict[str, Any]) -> None:
    assert _quick_params(InvokeParams, named) is None
    with pytest.raises(RpcError) as info:
        parse_params("invoke", named)
    assert ("problem", info.value.message) == _full_params("invoke", named)


# --- encode_job_result ----------------------------------------------------------------------------

_reply_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text() | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(request_id=st.integers() | st.text(), value=_reply_value)
def test_encode_job_result_writes_what_encode_result_writes(
    request_id: int | str, value: Any
) -> None:
    try:
        full = encode_result(request_id, value)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            encode_job_result(request_id, value)
        return
    assert json.loads(encode_job_result(request_id, value)) == json.loads(full)


def test_encode_job_result_what_orjson_does_not_take() -> None:
    value = {"big": 2**64, 7: "int key", "t": (1, 2)}
    assert encode_job_result(1, value) == encode_result(1, value)
    with pytest.raises(TypeError):
        encode_job_result(1, object())
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError):
        encode_job_result(1, circular)


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 1010, 1030, 5000])
@pytest.mark.parametrize("full", [False, True])
def test_nesting_past_the_limit_is_a_parse_error_on_either_path(levels: int, full: bool) -> None:
    # orjson reads 1,024 levels, the standard library about 1,000: a frame 1,010 deep was a
    # request on the quick path and -32700 on the full one (shared cases, a helper's re-run)
    number = "1234567890123456789012" if full else "1"  # 19+ digits: the full path
    args = '{"n":' + number + ',"x":' + "[" * (levels - 2) + "]" * (levels - 2) + "}"
    frame = '{"jsonrpc":"2.0","id":1,"method":"invoke","params":{"method":"m","args":' + args + "}}"
    assert (_quick_loads(frame) is _NOT_QUICK) == (full or levels > 1024)
    for sent in (frame, frame.encode()):
        with pytest.raises(RpcError) as info:
            parse_request(sent)
        assert info.value.code == -32700 and info.value.request_id is None
        assert info.value.message == (
            f"not valid JSON: nested too deeply (more than {MAX_JSON_DEPTH} levels)"
        )


def test_nesting_up_to_the_limit_is_read_and_brackets_in_strings_do_not_count() -> None:
    inner = "[" * (MAX_JSON_DEPTH - 4) + "]" * (MAX_JSON_DEPTH - 4)
    head = '{"jsonrpc":"2.0","id":1,"method":"invoke","params":{"method":"m","args":{"x":'
    assert parse_request(head + inner + "}}}").params["args"]["x"] is not None
    brackets = '"' + "[{" * 2000 + '"'
    assert parse_request(head + brackets + "}}}").params["args"]["x"].startswith("[{")
