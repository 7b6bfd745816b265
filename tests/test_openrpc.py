"""docs/openrpc.json against the server: every method the server dispatches is described,
every described method and parameter exists, the error codes are the protocol's, and real
replies of a real daemon (``mtpoold run``, real Telethon, the loopback DC) validate against
the result and error schemas (a small validator for the JSON Schema subset the document uses)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import trio

from mtpoold import _rpc
from mtpoold.client import Client, RpcError

from _daemonproc import dc_daemon

ROOT = Path(__file__).resolve().parent.parent
DOC: dict[str, Any] = json.loads((ROOT / "docs" / "openrpc.json").read_text())
METHODS: dict[str, Any] = {m["name"]: m for m in DOC["methods"]}

_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
#: The keywords the validator knows; the document may use no other.
KEYWORDS = {
    "$ref", "type", "const", "enum", "minimum", "maximum", "exclusiveMinimum", "minLength",
    "minItems", "required", "properties", "additionalProperties", "items", "description",
}  # fmt: skip


def resolve_ref(ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = DOC
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def problems(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (the subset in KEYWORDS); [] when it validates."""
    if "$ref" in schema:
        return problems(value, resolve_ref(schema["$ref"]), path)
    out: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in names):
            return [f"{path}: {value!r:.60} is not {types}"]
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: {value} > {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{path}: {value} <= {schema['exclusiveMinimum']}")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        out.append(f"{path}: shorter than {schema['minLength']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                out += problems(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        out += [f"{path}: missing {k!r}" for k in schema.get("required", ()) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                out += problems(v, props[k], f"{path}.{k}")
            elif extra is False:
                out.append(f"{path}: unexpected {k!r}")
            elif isinstance(extra, dict):
                out += problems(v, extra, f"{path}.{k}")
    return out


def schemas_in(node: Any) -> list[dict[str, Any]]:
    """Every schema object of the document (results, params, components), recursively."""
    found: list[dict[str, Any]] = []

    def walk(schema: Any) -> None:
        if not isinstance(schema, dict):
            return
        found.append(schema)
        for key in ("items", "additionalProperties"):
            walk(schema.get(key))
        for sub in schema.get("properties", {}).values():
            walk(sub)

    for method in DOC["methods"]:
        walk(method["result"]["schema"])
        for p in method["params"]:
            walk(p["schema"])
    for schema in DOC["components"]["schemas"].values():
        walk(schema)
    return found


def test_the_document_is_openrpc_1_and_uses_only_what_the_validator_checks() -> None:
    assert DOC["openrpc"].startswith("1.")
    assert DOC["info"]["title"] and DOC["info"]["version"]
    for method in DOC["methods"]:
        assert method["paramStructure"] == "by-name", method["name"]
        assert {"name", "schema"} <= set(method["result"]), method["name"]
        for p in method["params"]:
            assert {"name", "schema", "required"} <= set(p), (method["name"], p)
        for e in method.get("errors", ()):
            resolve_ref(e["$ref"])
    for schema in schemas_in(DOC):
        assert set(schema) <= KEYWORDS, set(schema) - KEYWORDS
        if "$ref" in schema:
            resolve_ref(schema["$ref"])


def test_every_dispatched_method_is_described_and_every_described_one_exists() -> None:
    assert set(METHODS) == set(_rpc.METHODS)


def test_described_params_are_the_servers() -> None:
    for name, cls in _rpc._PARAMS_OF.items():
        described = {p["name"]: p for p in METHODS[name]["params"]}
        fields = {f.name: f for f in attrs.fields(cls)}
        assert set(described) == set(fields), name
        for field_name, field in fields.items():
            required = field.default is attrs.NOTHING
            assert described[field_name]["required"] is required, (name, field_name)
    options = DOC["components"]["schemas"]["JobOptions"]["properties"]
    assert set(options) == {f.name for f in attrs.fields(_rpc._OptionsDoc)}
    # the schemas accept what the server accepts, and refuse what it refuses
    invoke = {p["name"]: p["schema"] for p in METHODS["invoke"]["params"]}
    assert problems({"deadline_ms": 1500, "tags": ["a"]}, invoke["options"]) == []
    assert problems({"deadline_ms": 0}, invoke["options"])
    assert problems({"deadline": 5}, invoke["options"])


def test_described_error_codes_are_the_protocols() -> None:
    codes = {e["code"] for e in DOC["components"]["errors"].values()}
    protocol = {
        getattr(_rpc, name)
        for name in _rpc.__all__
        if name.isupper()
        and isinstance(getattr(_rpc, name), int)
        and -32800 < getattr(_rpc, name) < -32000
    }
    assert codes == protocol


def error_codes_of(method: str) -> set[int]:
    refs = METHODS[method].get("errors", [])
    return {resolve_ref(e["$ref"])["code"] for e in refs}


def check_error(method: str, exc: RpcError, *, generic: bool = False) -> None:
    """The error's code is described (for the method, or a protocol error any request may
    get) and its data validates."""
    protocol = {-32700, -32600, -32601, -32602, -32603}
    assert exc.code in error_codes_of(method) | (protocol if generic else set()), (method, exc)
    assert problems(exc.data, DOC["components"]["schemas"]["ErrorData"]) == [], exc.data


def run_everything(config: Path) -> tuple[list[Any], list[Any]]:
    client = Client.discover(config)
    jobs = client.batch(
        [
            ("resolve", {"link_or_username": "@mtpoold_news"}),
            ("resolve", {"link_or_username": "https://t.me/alice_test"}),
            ("get_messages", {"peer": "@mtpoold_news", "ids": [1, 2, 99]}),
            ("invoke", {"method": "help.GetConfig"}),
            ("invoke", {"method": "contacts.ResolveUsername", "args": {"username": "bob_test"}}),
            ("resolve", {"link_or_username": "@nobody_by_that_name"}),
            ("invoke", {"method": "help.GetConfig", "options": {"account": "nobody"}}),
        ]
    )
    control = client.batch(
        [
            ("status", None),
            ("status", {"summary": True}),
            ("jobs", None),
            ("ping", None),
            ("cancel", {"id": 12345}),
            ("accounts.cooldowns", {"id": "acc"}),
            ("accounts.clear_cooldown", {"id": "acc"}),
            ("accounts.disable", {"id": "acc", "reason": "test"}),
            ("accounts.enable", {"id": "acc"}),
            ("accounts.forget", {"id": "acc"}),
            ("reload", None),
            ("no.such", None),
        ]
    )
    return jobs, control


async def test_real_replies_validate_against_the_schemas(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with dc_daemon(tmp_path) as (config, _dc):
            jobs, control = await trio.to_thread.run_sync(run_everything, config)
    methods = ["resolve", "resolve", "get_messages", "invoke", "invoke", "resolve", "invoke"]
    methods += ["status", "status", "jobs", "ping", "cancel", "accounts.cooldowns"]
    methods += ["accounts.clear_cooldown"]
    methods += ["accounts.disable", "accounts.enable", "accounts.forget", "reload", "no.such"]
    replies = jobs + control
    kinds = []
    for method, reply in zip(methods, replies, strict=True):
        if isinstance(reply, RpcError):
            kinds.append("error")
            check_error(method if method in METHODS else "status", reply, generic=True)
            continue
        kinds.append("ok")
        assert problems(reply, METHODS[method]["result"]["schema"]) == [], (method, reply)
    assert kinds == ["ok"] * 5 + ["error"] * 2 + ["ok"] * 9 + ["error", "ok", "error"], replies
    assert replies[5].error_class == "PEER_NOT_FOUND" and replies[5].code == -32001
    assert replies[6].code == -32602
    assert not math.isnan(replies[7]["uptime_s"])
    assert replies[7]["accounts"] and replies[8]["accounts"] == []  # status {"summary": true}
    assert sum(replies[8]["accounts_by_state"].values()) == replies[8]["accounts_total"]
    assert replies[9] == {"jobs": []}  # nothing in flight between batches
