"""The public surface is deliberate: exactly these names, each defined in a private module."""

import builtins
import inspect
import re
import sys
import typing
from collections.abc import Iterator

import attrs

import mtpoold
import mtpoold.testing


def test_public_names_are_exactly_the_documented_surface() -> None:
    # the public submodules (`mtpoold.testing`, `mtpoold.client`) show up once imported
    public = {name for name in dir(mtpoold) if not name.startswith("_")} - {"testing", "client"}
    assert public == set(mtpoold.__all__) - {"__version__"}


def test_public_names_come_from_private_modules() -> None:
    for name in mtpoold.__all__:
        if name == "__version__":
            continue
        module = getattr(mtpoold, name).__module__
        assert module.startswith("mtpoold._"), (name, module)


def test_testing_exports_the_loopback_dc_and_proxies() -> None:
    for name in ("open_dc", "open_proxy", "default_world", "load_world"):
        assert callable(getattr(mtpoold.testing, name))


def test_testing_exports_the_misbehaving_relay_and_mtproxy() -> None:
    for name in ("open_relay", "open_mtproxy"):
        assert callable(getattr(mtpoold.testing, name))
    for name in ("Relay", "RelayConnection", "MTProxy"):
        assert isinstance(getattr(mtpoold.testing, name), type)


def test_what_the_public_api_raises_or_returns_is_exported() -> None:
    """`open_pool` raises SessionLocked, `Pool.reload` returns a ReloadSummary; jobs return
    JobResult/JobMeta and raise JobFailed; statistics() returns PoolStatistics."""
    from mtpoold._pool import ReloadSummary
    from mtpoold._sessionlock import SessionLocked

    assert mtpoold.SessionLocked is SessionLocked
    assert issubclass(mtpoold.SessionLocked, mtpoold.MtpooldError)
    assert mtpoold.ReloadSummary is ReloadSummary
    for name in (
        "JobResult",
        "JobMeta",
        "JobFailed",
        "PoolStatistics",
        "AccountState",
        "ConfigError",
    ):
        assert name in mtpoold.__all__


def _public_callables() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for name in mtpoold.__all__:
        if name == "__version__":
            continue
        obj = getattr(mtpoold, name)
        found.append((name, obj))
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and callable(value):
                    found.append((f"{name}.{attr}", getattr(obj, attr)))
    return found


def _namespace() -> dict[str, object]:
    """Every name of every mtpoold module: resolves annotations behind TYPE_CHECKING."""
    ns: dict[str, object] = {}
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("mtpoold._"):
            ns.update(vars(module))
    return ns


def _classes_in(hint: object) -> Iterator[type]:
    if isinstance(hint, type):
        yield hint
        if attrs.has(hint):
            for field in attrs.fields(hint):
                if isinstance(field.type, type) or typing.get_args(field.type):
                    yield from _classes_in(field.type)
    for arg in typing.get_args(hint):
        yield from _classes_in(arg)


def test_every_type_in_a_public_signature_or_raises_section_is_exported() -> None:
    """Walks the public names: the classes their functions return, the public fields of their
    classes (and the attrs fields of those, e.g. `JobResult.meta`, `AccountConfig.telegram`)
    and the exceptions their docstrings' ``Raises:`` sections name."""
    import mtpoold._compose  # noqa: F401 - what open_pool's annotations name
    import mtpoold._sessionlock  # noqa: F401
    import mtpoold._store  # noqa: F401

    ns = _namespace()
    missing: set[tuple[str, str]] = set()
    for name, obj in _public_callables():
        hints = typing.get_type_hints(obj, localns=ns) if callable(obj) else {}
        for key, hint in hints.items():
            if key.startswith("_") or (not inspect.isclass(obj) and key != "return"):
                continue  # a class's private fields; a function's parameters
            for cls in _classes_in(hint):
                if cls.__module__.startswith("mtpoold._") and not hasattr(mtpoold, cls.__name__):
                    missing.add((name, cls.__name__))
        doc = inspect.getdoc(obj) or ""
        section = re.search(r"Raises:\n(.*?)(?:\n\S|\Z)", doc, re.S)
        for raised in re.findall(r"^ {4}`?(\w+)`?:", section.group(1) if section else "", re.M):
            if not hasattr(builtins, raised) and not hasattr(mtpoold, raised):
                missing.add((name, raised))
    assert not missing, sorted(missing)
