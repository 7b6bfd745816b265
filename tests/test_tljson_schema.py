"""Every TL function Telethon ships, built from JSON: the schema walk and property tests.

The rule under test (shared case 001): an argument the TL schema marks optional (flags), or
that Telethon types as accepting None (``date`` fields, written as 0), is None when omitted;
a pagination integer of a ``get``/``search`` function (offsets, min/max ids, hash) is 0 when
omitted; every other argument is required and named in one INVALID_ARGUMENT error. Nothing a JSON
caller can send makes `check_request` or `build_request` raise anything but `JobFailed`
INVALID_ARGUMENT.
"""

from __future__ import annotations

import collections
import functools
import inspect
import re
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telethon.tl import functions
from telethon.tl.alltlobjects import tlobjects
from telethon.tl.tlobject import TLObject, TLRequest

from mtpoold import _tljson
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._tljson import PeerKind, build_request, check_request

FUNCTIONS: list[type[TLRequest]] = sorted(
    (c for c in tlobjects.values() if c.__module__.startswith("telethon.tl.functions")),
    key=lambda c: (c.__module__, c.__name__),
)
NAMES: dict[type[TLRequest], str] = {c: _tljson._display_name(c) for c in FUNCTIONS}
#: Everything the block list blocks, allowed: these tests are about building requests.
ALLOW: list[str] = [n for n in NAMES.values() if _tljson.blocked_reason(n) is not None]


def _annotation_allows_none(annotation: object) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith("Optional[")
    return typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(
        annotation
    )


#: Written out here on its own (not imported): the pagination integers that default to 0.
_ZERO_DEFAULTS = {"offset_id", "offset", "add_offset", "offset_rate", "offset_topic"}
_ZERO_DEFAULTS |= {"max_id", "min_id", "hash"}


def _zero_default(cls: type[TLObject], p: inspect.Parameter) -> bool:
    listing = re.match(r"(Get|Search)[A-Z0-9]", cls.__name__) is not None
    return (
        issubclass(cls, TLRequest) and listing and p.annotation is int and p.name in _ZERO_DEFAULTS
    )


def required_arguments(cls: type[TLObject]) -> list[str]:
    """The arguments a caller must give, read from Telethon's signature on its own.

    Required: no default and an annotation without None, and ``random_id`` of TL type
    ``bytes`` (Telethon's default for it is a random *int*, which cannot be serialized);
    not the pagination integers of a ``Get…``/``Search…`` function (`_ZERO_DEFAULTS`).
    """
    names = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        has_default = p.default is not inspect.Parameter.empty
        if _zero_default(cls, p):
            continue
        if not has_default and not _annotation_allows_none(p.annotation):
            names.append(p.name)
        elif has_default and p.name == "random_id" and p.annotation is bytes:
            names.append(p.name)
    return names


def test_every_function_in_telethon_is_walked() -> None:
    assert len(FUNCTIONS) > 700
    assert functions.messages.GetHistoryRequest in NAMES


def _no_arguments_problem(cls: type[TLRequest]) -> str | None:
    required = required_arguments(cls)
    try:
        check_request(NAMES[cls], {}, allow=ALLOW)
    except JobFailed as exc:
        m = re.fullmatch(r"(\S+): missing arguments? (.+)", exc.message)
        if exc.error_class is not ErrorClass.INVALID_ARGUMENT or m is None:
            return f"{exc.error_class.value}: {exc.message}"
        if m.group(1) != NAMES[cls] or m.group(2).split(", ") != required:
            return f"names {m.group(2)}, required are {', '.join(required)}"
        return None
    except Exception as exc:
        return f"raised {exc!r}"
    return f"accepted without {', '.join(required)}" if required else None


def test_every_function_from_no_arguments_builds_or_names_each_missing_one() -> None:
    problems = {NAMES[c]: p for c in FUNCTIONS if (p := _no_arguments_problem(c)) is not None}
    assert problems == {}


# --- minimal JSON for every function: the required arguments only ---------------------------

_BY_SUBCLASS: dict[int, list[type[TLObject]]] = collections.defaultdict(list)
for _cls in tlobjects.values():
    _BY_SUBCLASS[getattr(_cls, "SUBCLASS_OF_ID", 0)].append(_cls)


def _minimal_value(shape: Any) -> Any:
    if shape.is_list:
        return []
    base = shape.base
    plain = {"int": 0, "str": "", "bool": False, "float": 0.0, "bytes": "", "datetime": 0}
    if base in plain:
        return plain[base]
    if base in _tljson._PEER_KINDS:
        return "@someone"  # a peer reference, resolved by the account
    ids = _tljson._subclass_ids(base)
    if ids is None:  # a generic !X query (invokeWithLayer & co.)
        return {"_": "help.GetConfig"}
    candidates = [c for i in ids for c in _BY_SUBCLASS[i]]
    cls = min(candidates, key=lambda c: (len(required_arguments(c)), c.__name__))
    return {"_": _tljson._display_name(cls)} | minimal_arguments(cls)


def minimal_arguments(cls: type[TLObject]) -> dict[str, Any]:
    """JSON for `cls` with only its required arguments, each the simplest value it takes."""
    shapes = _tljson._signature(cls)  # type: ignore[arg-type]
    return {name: _minimal_value(shapes[name]) for name in required_arguments(cls)}


@functools.cache
def _resolved(kind: PeerKind) -> TLObject:
    return _tljson._placeholder(kind)


async def _resolve(value: str | int, kind: PeerKind) -> TLObject:
    return _resolved(kind)


async def test_every_function_builds_and_serializes_from_its_required_arguments() -> None:
    problems: dict[str, str] = {}
    for cls in FUNCTIONS:
        args = minimal_arguments(cls)
        try:
            check_request(NAMES[cls], args, allow=ALLOW)
            request = await build_request(NAMES[cls], args, resolve_peer=_resolve)
            assert isinstance(request, cls)
            bytes(request)  # every omitted argument is one Telethon can write
        except Exception as exc:
            problems[NAMES[cls]] = repr(exc)
    assert problems == {}


async def test_case_001_get_history_without_offset_date() -> None:
    """shared/cases/001: offset_date is a TL ``date`` Telethon takes as None (written as 0)."""
    args = {"peer": "@example_news", "limit": 3, "offset_id": 0, "add_offset": 0}
    args |= {"max_id": 0, "min_id": 0, "hash": 0}
    check_request("messages.GetHistory", args, allow=())
    request = await build_request("messages.GetHistory", args, resolve_peer=_resolve)
    assert isinstance(request, functions.messages.GetHistoryRequest)
    assert request.offset_date is None
    assert bytes(request)
    with pytest.raises(JobFailed) as caught:
        check_request("messages.GetHistory", {"limit": 3}, allow=())
    assert caught.value.message == "messages.GetHistory: missing argument peer"


async def test_get_history_without_the_pagination_integers_sends_zeros() -> None:
    """offset_id, add_offset, max_id, min_id and hash: 0 ("none") when omitted or null."""
    args = {"peer": "@example_news", "limit": 3, "max_id": None}
    check_request("messages.GetHistory", args, allow=())
    request = await build_request("messages.GetHistory", args, resolve_peer=_resolve)
    assert isinstance(request, functions.messages.GetHistoryRequest)
    got = {k: getattr(request, k) for k in ("offset_id", "add_offset", "max_id", "min_id", "hash")}
    assert got == dict.fromkeys(got, 0)
    assert (request.limit, request.offset_date) == (3, None)
    assert bytes(request)
    with pytest.raises(JobFailed, match=r"messages\.GetHistory: missing argument limit$"):
        check_request("messages.GetHistory", {"peer": "@x"}, allow=())


def test_functions_that_act_keep_their_integers_required() -> None:
    """0 means "all" for deleteHistory's max_id and a session for resetAuthorization's hash."""
    with pytest.raises(JobFailed, match=r"missing argument max_id$"):
        check_request("messages.DeleteHistory", {"peer": "@x"}, allow=())
    with pytest.raises(JobFailed, match=r"missing argument hash$"):
        check_request("account.ResetAuthorization", {}, allow=["account.ResetAuthorization"])
    assert _tljson.zero_defaults(functions.messages.ReadHistoryRequest) == frozenset()


def test_random_id_of_type_bytes_is_required() -> None:
    """Telethon fills random_id with a random int even where TL types it bytes."""
    with pytest.raises(JobFailed, match=r"missing argument random_id$"):
        check_request("messages.ViewSponsoredMessage", {}, allow=())
    check_request("messages.ViewSponsoredMessage", {"random_id": "AAEC"}, allow=())
    check_request("messages.SendMessage", {"peer": "@x", "message": "hi"}, allow=())  # int: filled


# --- properties: any JSON arguments for any function ----------------------------------------

_TYPE_NAMES = sorted(
    {_tljson._display_name(c) for c in tlobjects.values() if not issubclass(c, TLRequest)}
)
_NUMBERS = (
    st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.sampled_from([2**31, -(2**31) - 1, 2**63, 2**64, 2**128, 2**256, 10**4299, -(10**4299)])
    | st.floats()  # NaN and the infinities too (1e400 reads as inf)
)
_SCALARS = st.none() | st.booleans() | _NUMBERS | st.text(max_size=12)


def _json(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        tl_object = st.fixed_dictionaries(
            {"_": st.sampled_from(_TYPE_NAMES)},
            optional={k: children for k in ("id", "access_hash", "peer", "flags", "date")},
        )
        return (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=6), children, max_size=3)
            | tl_object
        )

    return st.recursive(leaves, extend, max_leaves=8)


JSON = _json(_SCALARS)


@st.composite
def _function_and_args(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    cls = draw(st.sampled_from(FUNCTIONS))
    names = list(_tljson._signature(cls)) + ["no_such_argument"]  # type: ignore[arg-type]
    base = draw(st.booleans())
    args = minimal_arguments(cls) if base else {}
    args |= draw(st.dictionaries(st.sampled_from(names), JSON, max_size=4))
    return NAMES[cls], args


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_function_and_args())
async def test_check_request_with_any_json_is_fine_or_invalid_argument(
    call: tuple[str, dict[str, Any]],
) -> None:
    name, args = call
    try:
        check_request(name, args, allow=ALLOW)
    except JobFailed as exc:
        assert exc.error_class is ErrorClass.INVALID_ARGUMENT
        assert len(exc.message) < 2000
        return
    request = await build_request(name, args, resolve_peer=_resolve)
    assert bytes(request)
