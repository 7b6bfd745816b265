"""The pure JSON-RPC layer: parsing, parameter validation, error objects, token file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

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
from mtpoold._token import TokenError, ensure_token, is_private, read_token


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
        ('{"deadline_ms": 1e999}', "not valid JSON: number 1e999 is out of range"),
        ('{"id":', "not valid JSON: Expecting value (line 1 column 7)"),
        (b'{"id": "\xff"}', "not valid JSON: the frame is not UTF-8 text"),
        ("[" * 100_000, "not valid JSON: nested too deeply"),
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
        "ping",
        "cancel",
        "accounts.disable",
        "accounts.enable",
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
            "params.ids[1]: expected an integer, got boolean",
        ),
        ("get_messages", {"ids": [1]}, "params.peer: required"),
        ("invoke", {"method": "x", "options": []}, "params.options: expected an object, got array"),
        (
            "invoke",
            {"method": "x", "options": {"tags": "a"}},
            "params.options.tags: expected an array of strings, got string",
        ),
        (
            "invoke",
            {"method": "x", "options": {"account": ""}},
            "params.options.account: expected a non-empty string",
        ),
        ("accounts.disable", {"id": 1, "reason": "r"}, "params.id: expected a string, got number"),
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
    table = {c.value: code_for_error_class(c.value) for c in ErrorClass}
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


def test_ensure_token_creates_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token, created = ensure_token(path)
    assert created and len(token) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert is_private(path)
    assert ensure_token(path) == (token, False)
    assert read_token(path) == token


def test_read_token_errors_name_the_path_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "token"
    with pytest.raises(TokenError, match=r"does not exist"):
        read_token(path)
    path.write_text("two words\n")
    with pytest.raises(TokenError, match=r"does not hold a token") as caught:
        read_token(path)
    assert "two words" not in str(caught.value)
    path.write_text("\n")
    with pytest.raises(TokenError, match=r"does not hold a token"):
        ensure_token(path)
