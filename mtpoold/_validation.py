"""Structuring a parsed document into attrs classes, every problem one ``"key.path: reason"`` line.

The engine under both of mtpoold's inputs: the TOML config (`mtpoold._config`, every problem
of the file) and the JSON-RPC ``params`` (`mtpoold._rpc`, the first problem of a request).
Both read values through a strict cattrs converter (no coercion: ``"80"`` is not a port,
``true`` is not an integer), and both describe a problem the same way::

    proxies[0].port: expected an integer 1..65535, got "80a"
    params.ids[2]: expected an integer, got a string

What differs between the two is a `Dialect`: what a mapping is called (a TOML *table*, a JSON
*object*), whether a string value is quoted back (TOML config: yes, unless the field is a
secret; JSON-RPC: never, a parameter may be a username or message text), how numbers beyond
64 bits are shown, and the word for an absent key.

Pieces:

* `FieldProblem` — raised by an attrs validator: ``reason`` goes after ``<path>.<field>: ``.
* `WrongType` — raised by a strict structure hook.
* `Structurer` — the converter of one dialect, and the walk from cattrs' exception tree
  (`cattrs.errors.ClassValidationError` …) to problem lines (`Structurer.problems_from`),
  plus `Structurer.validation_problems`, which runs every validator of a structured (or
  partly structured) object instead of stopping at the first as attrs does.
* `join` (key paths), `in_document_order` (sort lines by section and entry index).
* Field metadata: `SECRET` (never echo the value), `EXPECT` (what a type error says was
  expected, so a type error and a range error on one key read the same).
* `did_you_mean`: the ``"; did you mean capacity?"`` after an unknown key, section or name
  (`difflib`), so a misspelling names its fix.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, get_args, get_origin

import attrs
import cattrs
import cattrs.gen
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from ._errors import ConfigError

__all__ = [
    "EXPECT",
    "FAILED",
    "JSON",
    "SECRET",
    "TOML",
    "Dialect",
    "FieldProblem",
    "Structurer",
    "WrongType",
    "attrs_class_of",
    "did_you_mean",
    "in_document_order",
    "join",
]

#: Field metadata key: the value is a secret, never shown (``got a string of 7 characters``).
SECRET: Final = "mtpoold_secret"
#: Field metadata key: replaces ``expected <type>`` in the field's type errors.
EXPECT: Final = "mtpoold_expect"


class FieldProblem(ValueError):
    """A validator's verdict on one field: ``reason`` goes after ``<path>.<field>: ``.

    ``field`` may carry a sub-path (``"ids[2]"``) or be empty (the problem is the entry's).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class WrongType(TypeError):
    """A strict structure hook refused a value (``sub`` is a sub-path such as ``[2]``).

    The message is written when the line is: the dialect and the field decide how ``value``
    is shown.
    """

    def __init__(self, expected: str, value: object, sub: str = "") -> None:
        super().__init__(f"{sub}expected {expected}")
        self.expected = expected
        self.value = value
        self.sub = sub


class _ItemErrors(Exception):
    """Per-element failures of an array: ``[(index, exception), ...]``."""

    def __init__(self, errors: list[tuple[int, BaseException]]) -> None:
        super().__init__(f"{len(errors)} invalid items")
        self.errors = errors


class _Failed:
    def __repr__(self) -> str:
        return "<failed>"


#: Stands for a field that did not structure, in a partly structured entry.
FAILED: Final = _Failed()


# --- dialects -------------------------------------------------------------------------------------


@attrs.frozen
class Dialect:
    """How one document language names kinds and shows values in problem lines.

    Attributes:
        language: ``"toml"`` or ``"json"``.
        mapping: What a mapping is called: ``"a table"`` (TOML), ``"an object"`` (JSON).
        missing: The reason of an absent required key: ``"missing"`` / ``"required"``.
        unknown: The reason of a key no field has: ``"unknown key"`` / ``"unknown parameter"``.
        list_known_keys: Follow an unknown key with the keys that exist (JSON-RPC: a caller
            reads the message, not the docs).
    """

    language: Literal["toml", "json"]
    mapping: str
    missing: str
    unknown: str
    list_known_keys: bool

    def kind(self, value: object) -> str:
        """``value``'s kind with its article (``"an array"``), in this language's words."""
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "a boolean"
        if isinstance(value, int | float) and self.language == "json":
            return "a number"
        if isinstance(value, int):
            return "an integer"
        if isinstance(value, float):
            return "a float"
        if isinstance(value, str):
            return "a string"
        if isinstance(value, list | tuple):
            return "an array"
        if isinstance(value, dict):
            return self.mapping
        if isinstance(value, _dt.datetime | _dt.date | _dt.time):
            return "a date/time"
        return type(value).__name__

    def show(self, value: object, *, secret: bool = False) -> str:
        """Describe ``value`` after ``got`` (secrets never shown; JSON strings never echoed)."""
        if isinstance(value, str):
            if secret:
                return f"a string of {len(value)} characters"
            return json.dumps(value) if self.language == "toml" else "a string"
        if secret or isinstance(value, bool) and self.language == "json":
            return self.kind(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return self._number(value)
        return self.kind(value)

    def _number(self, value: int | float) -> str:
        if isinstance(value, int):
            # Never str() of a 4,000-digit integer (JSON-RPC reads integers of any size).
            if value.bit_length() <= 128:
                return str(value)
            sign = "a negative" if value < 0 else "an"
            return f"{sign} integer of {value.bit_length()} bits"
        if self.language == "toml":
            if value.is_integer() and abs(value) < 1e15:
                return str(int(value))  # a float field holding 0 was written 0 (or 0.0): say 0
            return repr(value)
        if math.isfinite(value):
            return repr(value)
        # JSON has no infinity: 1e400 overflowed the float range.
        return "NaN" if math.isnan(value) else f"a number beyond {'-' if value < 0 else ''}1.8e308"


#: The config file's dialect.
TOML: Final = Dialect(
    language="toml",
    mapping="a table",
    missing="missing",
    unknown="unknown key",
    list_known_keys=False,
)
#: JSON-RPC ``params``.
JSON: Final = Dialect(
    language="json",
    mapping="an object",
    missing="required",
    unknown="unknown parameter",
    list_known_keys=True,
)


# --- suggestions ----------------------------------------------------------------------------------

#: How alike a word and a known name must be (`difflib.SequenceMatcher.ratio`, 0..1) to be
#: suggested: 0.75 takes one dropped, doubled or swapped letter in a word of 6 or more
#: (``capacty``, ``intervall_s``, ``GetHistry``) and leaves unrelated names out.
SUGGEST_CUTOFF: Final = 0.75


_ATTRS_CLASSES: dict[type, bool] = {}


def _is_attrs(cls: type) -> bool:
    """``attrs.has(cls)``, remembered per class (asked for every field of every entry: at
    100,000 accounts ``attrs.has`` itself was a tenth of ``parse_config``)."""
    known = _ATTRS_CLASSES.get(cls)
    if known is None:
        known = _ATTRS_CLASSES[cls] = attrs.has(cls)
    return known


#: Value types that hold no attrs instance: `Structurer.validation_problems` looks no further.
_LEAVES: Final = frozenset({str, int, float, bool, type(None), bytes})
_FIELD_PLANS: dict[type, tuple[tuple[attrs.Attribute[Any], Any], ...]] = {}


def _field_plan(cls: type) -> tuple[tuple[attrs.Attribute[Any], Any], ...]:
    """``attrs.fields(cls)`` with each field's validator, remembered per class."""
    plan = _FIELD_PLANS.get(cls)
    if plan is None:
        plan = _FIELD_PLANS[cls] = tuple((a, a.validator) for a in attrs.fields(cls))
    return plan


#: What a quick check (`Structurer.quick_fields`) answers for a value it does not take.
_NOT_QUICK: Final = object()


#: Integers a float holds exactly (the quick path's float fields take no larger ones).
_EXACT: Final = 2**53


def _quick_check(t: Any) -> Callable[[Any], Any] | None:
    """A check of one field's value taking exactly what the strict hooks take without a
    problem, for the common types (``str``, ``int``, ``float``, ``bool``, a ``Literal`` of
    strings, ``X | None``, ``tuple[str, ...]``); it returns the structured value or
    `_NOT_QUICK`. None: no quick check for this type (an entry using the field takes the
    full path)."""
    if t is str:
        return lambda v: v if type(v) is str else _NOT_QUICK
    if t is int:
        return lambda v: v if type(v) is int else _NOT_QUICK
    if t is bool:
        return lambda v: v if type(v) is bool else _NOT_QUICK
    if t is float:
        # an int float() takes exactly (past 2**53 it may round or overflow: the full path's)
        return lambda v: (
            v
            if type(v) is float
            else float(v)
            if type(v) is int and -_EXACT <= v <= _EXACT
            else _NOT_QUICK
        )
    if _is_literal(t):
        allowed = get_args(t)
        if not all(type(a) is str for a in allowed):
            return None
        choices = frozenset(allowed)
        return lambda v: v if type(v) is str and v in choices else _NOT_QUICK
    if _is_union(t):
        members = get_args(t)
        others = [m for m in members if m is not type(None)]
        if len(members) != 2 or len(others) != 1:
            return None
        inner = _quick_check(others[0])
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if _is_homogeneous_tuple(t) and get_args(t)[0] is str:

        def str_tuple(v: Any) -> Any:
            if type(v) is not list and type(v) is not tuple:
                return _NOT_QUICK
            for item in v:
                if type(item) is not str:
                    return _NOT_QUICK
            return tuple(v)

        return str_tuple
    return None


def did_you_mean(word: str, choices: Iterable[str], *, fold_case: bool = False) -> str:
    """``"; did you mean X?"`` for the known name closest to ``word`` (``"X or Y"`` when
    several are equally close, at most 3), or ``""`` when none is close enough
    (`SUGGEST_CUTOFF`).

    Args:
        word: What was written (a key, a section, a TL function name).
        choices: The names that exist.
        fold_case: Compare case-insensitively (TL names are matched so); the suggestion keeps
            the choice's own spelling.
    """
    if not word or len(word) > 64:  # a key is not a document
        return ""
    key = word.lower() if fold_case else word
    scored: dict[str, float] = {}
    matcher = difflib.SequenceMatcher(b=key, autojunk=False)
    for choice in choices:
        candidate = choice.lower() if fold_case else choice
        if candidate == key or choice in scored:
            continue
        matcher.set_seq1(candidate)
        if matcher.real_quick_ratio() >= SUGGEST_CUTOFF and matcher.quick_ratio() >= SUGGEST_CUTOFF:
            ratio = matcher.ratio()
            if ratio >= SUGGEST_CUTOFF:
                scored[choice] = ratio
    if not scored:
        return ""
    best = max(scored.values())
    close = sorted((c for c, r in scored.items() if r >= best - 1e-9), key=str.lower)[:3]
    return f"; did you mean {' or '.join(close)}?"


# --- key paths ------------------------------------------------------------------------------------

_PLAIN_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\[\d+\])*$")


def join(path: str, key: str) -> str:
    """``path`` + ``key`` as a key path: ``join("a[0]", "b") == "a[0].b"``; ``"[2]"`` appends;
    a key that is not a bare word is JSON-quoted (``proxies[0]."my key"``)."""
    if not key:
        return path or "<config>"
    if key.startswith("["):
        return f"{path}{key}"
    if not _PLAIN_KEY.match(key):
        key = json.dumps(key)
    return f"{path}.{key}" if path else key


def in_document_order(problems: Sequence[str], sections: Sequence[str]) -> list[str]:
    """Deduplicate; sort by section (the order of ``sections``) then entry index, keeping the
    order within an entry; lines of no known section first."""

    def key(line: str) -> tuple[int, int]:
        m = re.match(r"^([A-Za-z_]+)(?:\[(\d+)\])?", line)
        if not m or m.group(1) not in sections:
            return (-1, 0)
        return (sections.index(m.group(1)), int(m.group(2) or -1))

    return sorted(dict.fromkeys(problems), key=key)


def attrs_class_of(t: Any) -> type | None:
    """The attrs class ``t`` is, or the first one of its arguments (``X | None``), or None."""
    if isinstance(t, type) and attrs.has(t):
        return t
    for arg in get_args(t):
        if isinstance(arg, type) and attrs.has(arg):
            return arg
    return None


# --- the converter --------------------------------------------------------------------------------

_EXPECTED_OF: Final[Mapping[Any, str]] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "a boolean (true or false)",
    type(None): "null",
}


def _strict_int(value: Any, _t: Any = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType(_EXPECTED_OF[int], value)
    return value


def _strict_float(value: Any, _t: Any = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType(_EXPECTED_OF[float], value)
    return float(value)


def _strict_str(value: Any, _t: Any = None) -> str:
    if not isinstance(value, str):
        raise WrongType(_EXPECTED_OF[str], value)
    return value


def _strict_bool(value: Any, _t: Any = None) -> bool:
    if not isinstance(value, bool):
        raise WrongType(_EXPECTED_OF[bool], value)
    return value


def _strict_literal(value: Any, t: Any) -> Any:
    allowed = get_args(t)
    if value not in allowed or type(value) is not type(allowed[0]):
        raise WrongType(f"one of {', '.join(json.dumps(a) for a in allowed)}", value)
    return value


def _is_literal(t: Any) -> bool:
    return bool(get_origin(t) is Literal)


def _is_union(t: Any) -> bool:
    return get_origin(t) in (typing.Union, types.UnionType)


def _is_homogeneous_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_str_dict(t: Any) -> bool:
    return get_origin(t) is dict and get_args(t)[:1] == (str,)


class Structurer:
    """A strict cattrs converter for ``dialect``, and its problems as key-path lines.

    Args:
        dialect: `TOML` or `JSON`.
        base: Makes the underlying converter (``cattrs.preconf.tomllib.make_converter`` for
            the config file); its hooks for int, float, str, bool, literals, unions, homogeneous
            tuples, ``dict[str, …]`` and attrs classes are replaced by strict ones.
    """

    def __init__(
        self, dialect: Dialect, base: Callable[..., cattrs.Converter] = cattrs.Converter
    ) -> None:
        self.dialect = dialect
        conv = base(forbid_extra_keys=True, detailed_validation=True)
        conv.register_structure_hook(int, _strict_int)
        conv.register_structure_hook(float, _strict_float)
        conv.register_structure_hook(str, _strict_str)
        conv.register_structure_hook(bool, _strict_bool)
        conv.register_structure_hook_func(_is_literal, _strict_literal)
        conv.register_structure_hook_func(_is_union, self._structure_union)
        conv.register_structure_hook_func(_is_homogeneous_tuple, self._structure_tuple)
        conv.register_structure_hook_func(_is_str_dict, self._structure_str_dict)
        conv.register_structure_hook_factory(attrs.has, self._attrs_factory)
        self.converter: Final = conv
        self._quick_plans: dict[type, dict[str, Callable[[Any], Any]]] = {}

    def quick_fields(self, value: Any, cls: type) -> dict[str, Any] | None:
        """The keyword arguments of ``cls`` for ``value`` when every key of it is a field of
        ``cls`` whose type has a quick check (`_quick_check`) and every value passes it:
        exactly what structuring through the converter gives for such a value, without its
        per-field dispatch (at 100,000 accounts most of ``parse_config``). None otherwise:
        a key the class does not have, a value of another type, or a field without a quick
        check; the caller then structures ``value`` the full way, which reports why.

        Neither validators nor defaults are applied here: constructing ``cls(**fields)``
        does both (and fails on a missing required key).
        """
        if type(value) is not dict:
            return None
        plan = self._quick_plans.get(cls)
        if plan is None:
            plan = self._quick_plans[cls] = self._quick_plan(cls)
        fields: dict[str, Any] = {}
        for key, v in value.items():
            check = plan.get(key)
            if check is None:
                return None
            v = check(v)
            if v is _NOT_QUICK:
                return None
            fields[key] = v
        return fields

    @staticmethod
    def _quick_plan(cls: type) -> dict[str, Callable[[Any], Any]]:
        attrs.resolve_types(cls)
        plan: dict[str, Callable[[Any], Any]] = {}
        for a in attrs.fields(cls):
            if not a.init or a.alias != a.name:
                return {}  # keys that are not plain field names: never quick
            check = _quick_check(a.type)
            if check is not None:
                plan[a.name] = check
        return plan

    def _structure_union(self, value: Any, t: Any) -> Any:
        members = get_args(t)
        if value is None and type(None) in members:
            return None
        others = [m for m in members if m is not type(None)]
        if len(others) == 1:
            return self.converter.structure(value, others[0])
        for member in others:  # scalars, in the order written: ``str | int``
            try:
                return self.converter.structure(value, member)
            except WrongType:
                continue
        raise WrongType(" or ".join(_EXPECTED_OF.get(m, str(m)) for m in others), value)

    def _structure_tuple(self, value: Any, t: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise WrongType("an array", value)
        item_type = get_args(t)[0]
        items: list[Any] = []
        errors: list[tuple[int, BaseException]] = []
        for i, item in enumerate(value):
            try:
                items.append(self.converter.structure(item, item_type))
            except Exception as e:
                errors.append((i, e))
        if errors:
            raise _ItemErrors(errors)
        return tuple(items)

    def _structure_str_dict(self, value: Any, t: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise WrongType(self.dialect.mapping, value)
        value_type = get_args(t)[1]
        if value_type is Any:
            return dict(value)
        return {k: self.converter.structure(v, value_type) for k, v in value.items()}

    def _attrs_factory(self, cl: type) -> Callable[[Any, Any], Any]:
        generated: Callable[[Mapping[str, Any], Any], Any] = cattrs.gen.make_dict_structure_fn(
            cl, self.converter, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
        )

        def structure(value: Any, _t: Any) -> Any:
            if not isinstance(value, Mapping):
                raise WrongType(self.dialect.mapping, value)
            return generated(value, cl)

        return structure

    # --- problems ---------------------------------------------------------------------------------

    def problems_from(
        self,
        exc: BaseException,
        path: str,
        cl: type | None = None,
        field: str = "",
        *,
        item: bool = False,
    ) -> Iterator[str]:
        """Turn a structuring exception tree into ``"path: reason"`` lines.

        Plays the role of `cattrs.transform_error` with a formatter, but keeps the validators'
        own messages and field paths, gives one line per unknown key, describes type errors
        with the field's expectation (`EXPECT`; not for one ``item`` of an array field), and
        never echoes a `SECRET` field's value (nor one of its items).
        """
        meta: Mapping[str, Any] = {}
        if cl is not None and attrs.has(cl) and field:
            f = attrs.fields_dict(cl).get(field)
            meta = f.metadata if f is not None else {}
        if isinstance(exc, ClassValidationError):
            with_notes, without = exc.group_exceptions()
            for sub in without:  # unknown keys first: a misspelt key often explains a "missing"
                yield from self.problems_from(sub, path, exc.cl)
            for sub, note in with_notes:
                yield from self.problems_from(sub, join(path, note.name), exc.cl, note.name)
        elif isinstance(exc, IterableValidationError):
            with_notes_i, without_i = exc.group_exceptions()
            for sub, inote in with_notes_i:
                yield from self.problems_from(sub, f"{path}[{inote.index!r}]")
            for sub in without_i:
                yield from self.problems_from(sub, path)
        elif isinstance(exc, _ItemErrors):
            for index, item_exc in exc.errors:
                yield from self.problems_from(item_exc, f"{path}[{index}]", cl, field, item=True)
        elif isinstance(exc, ForbiddenExtraKeysError):
            names = sorted(a.name for a in attrs.fields(exc.cl))
            known = ""
            if self.dialect.list_known_keys:
                known = f"; expected {', '.join(names) if names else 'none'}"
            for key in sorted(exc.extra_fields):
                shown = key if len(key) <= 64 else f"{key[:60]}..."  # a key is not a document
                # JSON-RPC lists every parameter instead: the caller reads the message
                hint = "" if self.dialect.list_known_keys else did_you_mean(key, names)
                yield f"{join(path, shown)}: {self.dialect.unknown}{hint}{known}"
        elif isinstance(exc, ConfigError):
            yield from exc.problems
        elif isinstance(exc, FieldProblem):
            yield f"{join(path, exc.field)}: {exc.reason}"
        elif isinstance(exc, WrongType):
            expected = (not item and meta.get(EXPECT)) or exc.expected
            got = self.dialect.show(exc.value, secret=bool(meta.get(SECRET)))
            yield f"{path}{exc.sub}: expected {expected}, got {got}"
        elif isinstance(exc, KeyError):
            yield f"{path}: {self.dialect.missing}"
        else:  # pragma: no cover - a cattrs/attrs failure we did not foresee: still one line
            yield f"{path or '<config>'}: invalid ({type(exc).__name__})"

    def validation_problems(self, obj: Any, path: str, cls: type | None = None) -> Iterator[str]:
        """Run every attrs validator of ``obj`` and of the attrs values inside it, collecting
        each failure instead of stopping at the first (attrs itself stops at the first).

        ``obj`` may be a stand-in namespace for an entry that did not structure (``cls``
        given): fields that failed hold `FAILED`, and a validator tripping over one is skipped.
        """
        if isinstance(obj, tuple):
            for i, item in enumerate(obj):
                yield from self.validation_problems(item, f"{path}[{i}]")
            return
        cls = cls or type(obj)
        if not _is_attrs(cls):
            return
        for a, validator in _field_plan(cls):
            value = getattr(obj, a.name)
            if value is FAILED:
                continue
            if validator is not None:
                try:
                    validator(obj, a, value)
                except (FieldProblem, ConfigError) as e:
                    yield from self.problems_from(e, path)
                except Exception:  # depends on a field that failed to structure: reported
                    pass
            kind = type(value)
            if kind in _LEAVES or (kind is tuple and not value):
                continue  # nothing inside to validate (100,000 entries: most fields)
            if isinstance(value, tuple) or _is_attrs(kind):
                yield from self.validation_problems(value, join(path, a.name))

    def first_problem(self, value: Any, cls: type[Any], path: str) -> tuple[Any, str | None]:
        """Structure ``value`` as ``cls`` with its validators on.

        Returns:
            ``(obj, None)``, or ``(None, line)`` with the first problem in field order
            (unknown keys first).
        """
        try:
            return self.converter.structure(value, cls), None
        except Exception as exc:
            for line in self.problems_from(exc, path, cls):
                return None, line
            raise  # pragma: no cover - every exception above yields a line
