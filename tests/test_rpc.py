"""The pure JSON-RPC layer: parsing, parameter validation, error objects, token file."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtpoold import _rpc
from mtpoold._errors import ErrorClass
from mtpoold._rpc import (
    GetMessagesParams,
    InvokeParams,
    JobOptions,
    Request,
    RpcError,
    code_for_error_class,
    encode_error,
    encode_result,
    parse_params,
    parse_request,
)


def test_parse_request_ok() -> None:
    r = parse_request('{"jsonrpc": "2.0", "id": "a", "method": "ping"}')
    assert r == Request(id="a", method="ping", params=None)
    r = parse_request(b'{"jsonrpc": "2.0", "id": 3, "method": "x", "params": [1]}')
    assert r == Request(id=3, method="x", params=[1])


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [
        ('{"id":', -32700, None),
        ("NaN", -32700, None),
        ('{"jsonrpc": "2.0", "id": 1, "method": "ping", "x": 1}', -32600, 1),
        ('{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', -32600, None),
        ('{"jsonrpc": 2.0, "id": "q", "method": "ping"}', -32600, "q"),
        ("[]", -32600, None),
        ('"x"', -32600, None),
    ],
)
def test_parse_request_errors(frame: str, code: int, request_id: object) -> None:
    with pytest.raises(RpcError) as caught:
        parse_request(frame)
    assert caught.value.code == code
    assert caught.value.request_id == request_id


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}',
         "not valid JSON: NaN is not allowed"),
        ('{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": -Infinity}}',
         "not valid JSON: -Infinity is not allowed"),
        ("Infinity", "not valid JSON: Infinity is not allowed"),
        ('{"id": 1%s}' % ("0" * 4300), "not valid JSON: an integer of more than 4300 digits"),
        ('{"id":', "not valid JSON: Expecting value (line 1 column 7)"),
        (b'{"id": "\xff"}', "not valid JSON: the frame is not UTF-8 text"),
        ("[" * 100_000, "not valid JSON: nested too deeply (more than 512 levels)"),
        ('{"jsonrpc": "2.0", "id": "\\ud800", "method": "ping"}',
         "not valid JSON: a string holds an unpaired UTF-16 surrogate (\\uD800-\\uDFFF)"),
        ('{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"a": ["\\uDFFFx"]}}',
         "not valid JSON: a string holds an unpaired UTF-16 surrogate (\\uD800-\\uDFFF)"),
        # UTF-8 encoded surrogates (CESU-8) are not UTF-8 (json.loads of bytes takes them)
        (b'{"jsonrpc": "2.0", "id": "\xed\xa0\x80", "method": "ping"}',
         "not valid JSON: the frame is not UTF-8 text"),
    ],
)  # fmt: skip
def test_parse_request_parse_errors_say_what_is_wrong(frame: str | bytes, message: str) -> None:
    with pytest.raises(RpcError) as caught:
        parse_request(frame)
    assert (caught.value.code, caught.value.message) == (-32700, message)
    assert caught.value.error_class == "PARSE_ERROR"


def test_parse_request_deep_nesting_is_a_parse_error() -> None:
    with pytest.raises(RpcError) as caught:
        parse_request("[" * 100_000)
    assert caught.value.code == -32700


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_parse_request_never_raises_anything_but_rpc_error(frame: bytes | str) -> None:
    try:
        r = parse_request(frame)
    except RpcError as exc:
        assert exc.code in (-32700, -32600)
        json.loads(encode_error(exc.request_id, exc))
    else:
        assert isinstance(r.id, str | int)
        encode_result(r.id, r.method).encode("utf-8")  # every reply to it can be sent


def test_parse_request_a_surrogate_pair_escaped_is_one_character() -> None:
    r = parse_request('{"jsonrpc": "2.0", "id": "\\ud83d\\ude00", "method": "ping"}')
    assert r.id == "\U0001f600"


def test_parse_params_invoke_defaults_and_options() -> None:
    assert parse_params("invoke", {"method": "help.GetConfig"}) == InvokeParams(
        method="help.GetConfig", args={}, options=JobOptions()
    )
    p = parse_params(
        "get_messages",
        {
            "peer": "durov",
            "ids": [1, 2],
            "options": {"deadline_ms": 250, "tags": ["x"], "account": None},
        },
    )
    assert p == GetMessagesParams(
        peer="durov", ids=(1, 2), options=JobOptions(deadline_s=0.25, account=None, tags=("x",))
    )
    assert _rpc.METHODS == {
        "invoke",
        "resolve",
        "get_messages",
        "status",
        "jobs",
        "ping",
        "cancel",
        "accounts.disable",
        "accounts.enable",
        "accounts.cooldowns",
        "accounts.clear_cooldown",
        "accounts.forget",
        "reload",
    }


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("get_messages", {"peer": "p", "ids": []}, "params.ids: expected at least one message id"),
        (
            "get_messages",
            {"peer": "p", "ids": [1, True]},
            "params.ids[1]: expected an integer, got a boolean",
        ),
        ("get_messages", {"ids": [1]}, "params.peer: required"),
        (
            "invoke",
            {"method": "x", "options": []},
            "params.options: expected an object, got an array",
        ),
        (
            "invoke",
            {"method": "x", "options": {"tags": "a"}},
            "params.options.tags: expected an array of strings, got a string",
        ),
        (
            "invoke",
            {"method": "x", "options": {"account": ""}},
            "params.options.account: expected a non-empty string",
        ),
        ("accounts.disable", {"id": 1, "reason": "r"}, "params.id: expected a string, got 1"),
        ("status", [1], "params: expected an object (named parameters), got an array"),
    ],
)
def test_parse_params_errors(method: str, params: object, message: str) -> None:
    with pytest.raises(RpcError, match=r"^") as caught:
        parse_params(method, params)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.error_class, caught.value.message) == (
        -32602,
        "INVALID_ARGUMENT",
        message,
    )


def test_parse_params_accepts_empty_for_parameterless_methods() -> None:
    for params in (None, {}, []):
        parse_params("ping", params)
        parse_params("status", params)


def test_unknown_method() -> None:
    with pytest.raises(RpcError) as caught:
        parse_params("nope", None)
    assert caught.value.code == -32601


def test_code_for_error_class_covers_every_error_class() -> None:
    table = {c.value: code_for_error_class(c) for c in ErrorClass}
    assert table["NO_ACCOUNT_AVAILABLE"] == -32002
    assert table["SHUTTING_DOWN"] == -32003
    assert table["CANCELLED"] == -32004
    assert table["INVALID_ARGUMENT"] == -32602
    assert table["FLOOD_WAIT"] == table["GENERIC"] == -32001


def test_error_object_round_trip() -> None:
    err = RpcError(
        -32001, "flood", error_class="FLOOD_WAIT", retry_after_s=37.0, account="a1", attempts=2
    )
    frame = json.loads(encode_error(5, err))
    assert frame == {
        "jsonrpc": "2.0",
        "id": 5,
        "error": {
            "code": -32001,
            "message": "flood",
            "data": {"class": "FLOOD_WAIT", "retry_after_s": 37.0, "account": "a1", "attempts": 2},
        },
    }
    back = RpcError.from_object(frame["error"])
    assert (back.code, back.error_class, back.retry_after_s, back.account, back.attempts) == (
        -32001,
        "FLOOD_WAIT",
        37.0,
        "a1",
        2,
    )
    assert RpcError.from_object("junk").code == -32603
    assert str(err) == "FLOOD_WAIT (-32001): flood"


def test_encode_result_refuses_nan_and_objects() -> None:
    assert json.loads(encode_result("i", {"ü": 1})) == {
        "jsonrpc": "2.0",
        "id": "i",
        "result": {"ü": 1},
    }
    with pytest.raises(ValueError):
        encode_result(1, float("nan"))
    with pytest.raises(TypeError):
        encode_result(1, object())


# --- token file -----------------------------------------------------------------------------------


# --- numbers: any JSON number in any numeric parameter --------------------------------------

_HUGE = "1" + "0" * 400  # shared case 002
_CAP = "; the operator's cap (policy.job_deadline_s) is lower still"
_AT_MOST = "params.options.deadline_ms: expected at most 2**53 (9007199254740992) milliseconds"
_IDS = "expected an integer 1..2147483647, got"
_BEYOND = "a number beyond 1.8e308"
_HUGE_ID = '{"peer": "p", "ids": [1, ' + _HUGE + "]}"
_PEERS = "params.peer: expected a string or an integer -9223373036854775807..9223372036854775807"


def _params_of(method: str, params: str) -> Any:
    request = parse_request(
        '{"jsonrpc": "2.0", "id": 22, "method": "' + method + '", "params": ' + params + "}"
    )
    with pytest.raises(RpcError) as caught:
        parse_params(request.method, request.params)
    assert (caught.value.code, caught.value.error_class) == (-32602, "INVALID_ARGUMENT")
    return caught.value.message


@pytest.mark.parametrize(
    ("deadline_ms", "message"),
    [
        (_HUGE, f"{_AT_MOST}, got an integer of 1329 bits{_CAP}"),
        ("1e400", f"{_AT_MOST}, got a number beyond 1.8e308{_CAP}"),
        ("9007199254740993", f"{_AT_MOST}, got 9007199254740993{_CAP}"),
        ("-1e400", "params.options.deadline_ms: expected > 0, got a number beyond -1.8e308"),
        ("-5", "params.options.deadline_ms: expected > 0, got -5"),
        (
            "-" + _HUGE,
            "params.options.deadline_ms: expected > 0, got a negative integer of 1329 bits",
        ),
        ("0.0", "params.options.deadline_ms: expected > 0, got 0.0"),
        ("true", "params.options.deadline_ms: expected a number of milliseconds, got a boolean"),
        ('"100"', "params.options.deadline_ms: expected a number of milliseconds, got a string"),
    ],
)  # fmt: skip
def test_parse_params_deadline_ms_of_any_size_or_type(deadline_ms: str, message: str) -> None:
    params = '{"method": "help.GetConfig", "options": {"deadline_ms": ' + deadline_ms + "}}"
    assert _params_of("invoke", params) == message


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (_HUGE_ID, f"params.ids[1]: {_IDS} an integer of 1329 bits"),
        ('{"peer": "p", "ids": [0]}', f"params.ids[0]: {_IDS} 0"),
        ('{"peer": "p", "ids": [-3]}', f"params.ids[0]: {_IDS} -3"),
        ('{"peer": "p", "ids": [2147483648]}', f"params.ids[0]: {_IDS} 2147483648"),
        ('{"peer": "p", "ids": [1.0]}', "params.ids[0]: expected an integer, got 1.0"),
        ('{"peer": "p", "ids": [1e400]}', f"params.ids[0]: expected an integer, got {_BEYOND}"),
        ('{"peer": ' + _HUGE + ', "ids": [1]}', f"{_PEERS}, got an integer of 1329 bits"),
        ('{"peer": 9223372036854775808, "ids": [1]}', f"{_PEERS}, got 9223372036854775808"),
        ('{"peer": 1.5, "ids": [1]}', "params.peer: expected a string or an integer, got 1.5"),
    ],
)  # fmt: skip
def test_parse_params_get_messages_numbers(params: str, message: str) -> None:
    assert _params_of("get_messages", params) == message


def test_parse_params_numbers_in_range_work() -> None:
    p = parse_params("invoke", {"method": "m", "options": {"deadline_ms": 2**53}})
    assert isinstance(p, InvokeParams) and p.options.deadline_s == 2**53 / 1000
    p = parse_params("invoke", {"method": "m", "options": {"deadline_ms": 0.5}})
    assert isinstance(p, InvokeParams) and p.options.deadline_s == 0.0005
    p = parse_params("get_messages", {"peer": -(2**63), "ids": [1, 2**31 - 1]})
    assert p == GetMessagesParams(peer=-(2**63), ids=(1, 2**31 - 1), options=JobOptions())
    request = parse_request('{"jsonrpc":"2.0","id":' + "9" * 4300 + ',"method":"ping"}')
    assert json.loads(encode_result(request.id, None))["id"] == request.id  # echoed as sent


_NUMBERS = (
    st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.sampled_from([0, -1, 2**31, 2**53, 2**53 + 1, 2**63, 10**4300 - 1])
    | st.floats()
)
_VALUES = st.recursive(
    st.none() | st.booleans() | _NUMBERS | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)
#: The parameter names of each method (and a typo), to generate params that get far.
_PARAM_NAMES: dict[str, list[str]] = {
    "invoke": ["method", "args", "options"],
    "resolve": ["link_or_username", "options"],
    "get_messages": ["peer", "ids", "options"],
    "status": ["summary"],
    "jobs": [],
    "ping": [],
    "cancel": ["id"],
    "accounts.disable": ["id", "reason"],
    "accounts.enable": ["id"],
    "accounts.forget": ["id"],
    "accounts.cooldowns": ["id"],
    "accounts.clear_cooldown": ["id", "rate_class"],
    "reload": [],
}
_OPTIONS = st.dictionaries(
    st.sampled_from(["deadline_ms", "account", "tags", "deadline"]),
    _VALUES | st.lists(st.text(max_size=4), max_size=2),
    max_size=3,
)


@st.composite
def _method_and_params(draw: st.DrawFn) -> tuple[str, Any]:
    method = draw(st.sampled_from(sorted(_PARAM_NAMES)))
    if draw(st.integers(0, 9)) == 0:
        return method, draw(_VALUES)  # params of any shape
    values = {
        "options": _OPTIONS | _VALUES,
        "ids": st.lists(_NUMBERS, min_size=1, max_size=3) | _VALUES,
        "peer": _NUMBERS | st.text(max_size=5) | _VALUES,
    }
    names = draw(st.sets(st.sampled_from(_PARAM_NAMES[method] + ["typo"])))
    return method, {name: draw(values.get(name, _VALUES)) for name in names}


def test_method_table_of_the_property_test_is_complete() -> None:
    assert set(_PARAM_NAMES) == _rpc.METHODS


@given(_method_and_params())
def test_parse_params_any_json_works_or_names_the_parameter(call: tuple[str, Any]) -> None:
    """Every params value for every method: a result, or -32602 naming the parameter."""
    method, params = call
    if params is not None and not isinstance(params, dict | list):
        return  # parse_request answers these with -32600 before parse_params
    try:
        parse_params(method, params)
    except RpcError as exc:
        assert (exc.code, exc.error_class) == (-32602, "INVALID_ARGUMENT")
        assert re.match(r'params(\.\w+|\."(?:[^"\\]|\\.)*"|\[\d+\])*: ', exc.message), exc.message
        assert len(exc.message) < 1000
        json.loads(encode_error(1, exc))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "params.options.max_age_s: expected a finite number >= 0, got -1"),
        (1e400, "params.options.max_age_s: expected a finite number >= 0, got a number beyond"),
        (10**400, "params.options.max_age_s: expected a finite number >= 0, got an integer of"),
        ("5", "params.options.max_age_s: expected a number of seconds, got a string"),
        (True, "params.options.max_age_s: expected a number of seconds, got a boolean"),
    ],
)
def test_parse_params_max_age_s_is_a_finite_number_of_seconds(value: object, message: str) -> None:
    with pytest.raises(RpcError) as info:
        parse_params("resolve", {"link_or_username": "@xnews", "options": {"max_age_s": value}})
    assert info.value.code == -32602 and info.value.message.startswith(message)
    ok = parse_params("get_messages", {"peer": "@x", "ids": [1], "options": {"max_age_s": 30}})
    assert isinstance(ok, GetMessagesParams) and ok.options.max_age_s == 30.0
