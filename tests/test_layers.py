"""The layers: a scheduling core that knows no Telethon, and one owner of scheduling state.

The scheduling core — gate, lane, ready index, dispatcher, policy, account worker, pool,
statistics, and the error vocabulary — is handed the Telegram side where the pool is composed
(`mtpoold._compose`); it never imports it. These tests read the package's source (``ast``) and
run a core pool on test doubles in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from mtpoold._account import Client
from mtpoold._config import AccountConfig, Config
from mtpoold._errors import ErrorClass, Failure, JobFailed
from mtpoold._pool import TelegramSide, open_pool

from _fakeclient import make_config

PACKAGE = Path(__file__).resolve().parent.parent / "mtpoold"

#: The scheduling core and the plain-Python vocabulary it runs on.
CORE = frozenset(
    f"mtpoold.{m}"
    for m in (
        "_gate",
        "_lane",
        "_ready",
        "_dispatch",
        "_policy",
        "_account",
        "_pool",
        "_stats",
        "_peermemory",  # every account's peers with their access hashes
        "_readonly",  # the read-only list (plain data)
        "_share",  # shared and merged read-only jobs, the answer cache
        "_rateclass",  # rate classes: TL names -> class, budget windows (plain data)
        "_budget",  # budgets per (account, class) and the request guard
        "_latency",  # fixed-bucket histograms the lanes record (gate wait, call duration)
        "_jobs",  # the registry of jobs in flight and their hops
        "_gcpause",  # the cyclic collector paused while 100,000 accounts are built
        "_promptwake",  # how lanes sleep until a start slot on time (trio only)
        "_checkedrequests",  # invoke requests that passed the check (plain data)
    )
)
VOCABULARY = frozenset(
    f"mtpoold.{m}"
    for m in (
        "_errors",  # ErrorClass, Failure, JobFailed, ConnectPhase, ProxyUnavailable, redact
        "_config",  # the validated config the pool is given
        "_validation",  # the config's structuring engine (problems by key path)
        "_listen",  # the config's parser of daemon.listen
        "_store",  # the SQLite state store (cooldowns across restarts)
        "_secrets",  # private files and redaction, under the store
        "_sessionfiles",  # session file paths (the config's duplicate-session check)
        "_redisurl",  # the [cluster] redis_url rules (the config's check, pure)
        "_logformat",  # log lines: `log_event`, the formatters, the log context
    )
)
#: Not even lazily (in a function), except for `LAZY_EXCEPTIONS`.
FORBIDDEN_PACKAGES = frozenset({"telethon", "python_socks", "trio_asyncio", "socks"})
#: Lazy imports of the vocabulary that reach the Telegram side, each with why it is there.
LAZY_EXCEPTIONS = {
    # Config validation: a non-empty [policy] allow_methods is looked up in Telethon's TL
    # schema when the config is built (never while scheduling; a default config does not).
    ("mtpoold._config", "mtpoold._tljson"): "_allow_methods",
}


def _module_path(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    package = PACKAGE / rel / "__init__.py"
    return package if package.exists() else PACKAGE / rel.with_suffix(".py")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[tuple[ast.AST, str | None]]:
    """Every node that can run (``if TYPE_CHECKING:`` bodies left out), with the name of the
    function it sits in (None at module level)."""

    def walk(node: ast.AST, func: str | None) -> Iterator[tuple[ast.AST, str | None]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    yield sub, func
                    yield from walk(sub, func)
                continue
            inner = (
                child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else func
            )
            yield child, inner
            yield from walk(child, inner)

    return walk(tree, None)


def imports_of(module: str) -> list[tuple[str, str | None]]:
    """``(imported module, function it is imported in or None)`` for one package module:
    absolute names as written, ``from . import x`` / ``from .x import y`` resolved."""
    path = _module_path(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node, func in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, func) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                found.append((node.module, func))
                continue
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.module else base
            if node.module:
                found.append((target, func))
            for alias in node.names:  # ``from . import _x`` imports a module
                if _module_path(f"{target}.{alias.name}").exists():
                    found.append((f"{target}.{alias.name}", func))
    return found


def reached_from(roots: frozenset[str]) -> dict[str, tuple[str, str | None]]:
    """Every module reached from ``roots`` through imports that can run, transitively within
    the package: ``{module: (the module importing it, function or None)}``."""
    reached: dict[str, tuple[str, str | None]] = {}
    todo = sorted(roots)
    seen = set(roots)
    while todo:
        module = todo.pop()
        for target, func in imports_of(module):
            if (module, target) in LAZY_EXCEPTIONS:
                assert func == LAZY_EXCEPTIONS[(module, target)], (module, target, func)
                continue
            if target == "mtpoold" or target.startswith("mtpoold."):
                if target not in seen and _module_path(target).exists():
                    seen.add(target)
                    reached[target] = (module, func)
                    todo.append(target)
            else:
                reached.setdefault(target, (module, func))
    return reached


def test_the_scheduling_core_reaches_no_telethon_in_its_import_graph() -> None:
    reached = reached_from(CORE)
    forbidden = {
        name: by for name, by in reached.items() if name.split(".")[0] in FORBIDDEN_PACKAGES
    }
    assert forbidden == {}, "the core reaches Telethon/python-socks/trio-asyncio"
    package = {name: by for name, by in reached.items() if name.startswith("mtpoold")}
    outside = {name: by for name, by in package.items() if name not in CORE | VOCABULARY}
    assert outside == {}, "the core reaches the Telegram side, the daemon or the CLI"


def test_the_import_graph_walk_sees_the_telegram_side() -> None:
    # The walk itself: the composition and the client do reach Telethon, lazily or not.
    composed = reached_from(frozenset({"mtpoold._compose"}))
    assert {"mtpoold._classify", "mtpoold._client", "mtpoold._tljson", "mtpoold._lookup"} <= set(
        composed
    )
    assert composed["telethon"] and composed["python_socks"] and composed["trio_asyncio"]
    client = {name for name, _ in imports_of("mtpoold._client")}
    assert "telethon" in client


PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    import mtpoold._pool as core
    from mtpoold._config import parse_config
    from mtpoold._errors import ErrorClass, Failure

    class Double:
        def __init__(self, acc):
            self.id, self.up = acc.id, False
        async def connect(self):
            self.up = True
        async def call(self, method, args):
            await trio.sleep(0)
            if self.id == "a1":
                raise ConnectionResetError("reset")
            return {"account": self.id}
        async def resolve(self, link):
            return {}
        async def get_messages(self, peer, ids):
            return {}
        async def disconnect(self):
            self.up = False
        def is_connected(self):
            return self.up

    side = core.TelegramSide(
        client_factory=lambda config: Double,
        classify=lambda exc: Failure(ErrorClass.STREAM_CLOSED, type(exc).__name__),
    )
    config = parse_config(
        {"accounts": [{"id": i, "api_id": 1, "api_hash": "0" * 32, "session_string": "x" + i}
                      for i in ("a1", "a2")],
         "direct": {"interval_s": 0}},
        base_dir=Path("."),
    )

    async def main():
        async with core.open_pool(config, side) as pool:
            result = await pool.invoke("help.GetConfig", {}, account=None)
            assert result.value == {"account": "a2"}, result
            assert result.meta.attempts in (1, 2), result

    trio.run(main)
    banned = ("telethon", "python_socks", "trio_asyncio", "socks")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in banned)
    telegram = sorted(
        m for m in sys.modules
        if m in ("mtpoold._classify", "mtpoold._client", "mtpoold._tljson", "mtpoold._lookup",
                 "mtpoold._summaries", "mtpoold._startup", "mtpoold._rsakeys",
                 "mtpoold._sessionlock", "mtpoold._aiolog", "mtpoold._wire", "mtpoold._sessionid")
    )
    print(loaded, telegram)
    """
)


def test_a_core_pool_runs_on_doubles_without_telethon_loaded() -> None:
    # ``import mtpoold._pool`` runs the package's __init__ too (its open_pool is the
    # composition, which imports the Telegram side only when a pool is composed).
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "[]"], proc.stdout


# --- one owner of scheduling state ----------------------------------------------------------------

#: Scheduling fields and the one class (besides the dispatcher) whose own methods set them.
ACCOUNT_FIELDS = frozenset(
    {"cooldown_until_at", "disabled_reason", "reserved", "retired", "lane", "last_used_at"}
)
LANE_FIELDS = frozenset({"cooldown_until_at", "consecutive_failures", "_consecutive_failures"})
OWNERS = {
    "_account.py": ("AccountWorker", ACCOUNT_FIELDS),
    "_lane.py": ("ProxyLane", LANE_FIELDS),
    # a job's progress notes the lane of its attempt: its own field, not a scheduling one
    "_jobs.py": ("JobProgress", frozenset({"lane"})),
}
SCHEDULER = "_dispatch.py"


def _assigned_attributes(tree: ast.AST) -> Iterator[tuple[ast.Attribute, str | None]]:
    """Attributes assigned to (``x.f = ``, ``x.f += ``, ``x.f: T = ``, in tuples too, and
    ``setattr(x, "f", v)``), with the enclosing class name."""

    def targets(node: ast.AST) -> Iterator[ast.expr]:
        if isinstance(node, ast.Assign):
            yield from node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            yield node.target
        elif isinstance(node, ast.For | ast.AsyncFor):
            yield node.target
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            yield node.optional_vars
        elif isinstance(node, ast.NamedExpr):
            yield node.target

    def flatten(target: ast.expr) -> Iterator[ast.expr]:
        if isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                yield from flatten(elt)
        elif isinstance(target, ast.Starred):
            yield from flatten(target.value)
        else:
            yield target

    def walk(node: ast.AST, cls: str | None) -> Iterator[tuple[ast.Attribute, str | None]]:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.ClassDef) else cls
            for target in targets(child):
                for t in flatten(target):
                    if isinstance(t, ast.Attribute):
                        yield t, inner
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Name)
                and child.func.id == "setattr"
                and len(child.args) >= 2
                and isinstance(child.args[1], ast.Constant)
                and isinstance(child.args[1].value, str)
            ):
                fake = ast.Attribute(value=child.args[0], attr=child.args[1].value)
                ast.copy_location(fake, child)
                yield fake, inner
            yield from walk(child, inner)

    return walk(tree, None)


#: Outside the package: the tests, the benchmarks and the examples drive the verbs too. This
#: file is left out: its snippets and its read-only check assign on purpose.
OUTSIDE = ("tests", "bench", "examples")


def offenders(roots: Sequence[Path] = (PACKAGE,)) -> list[str]:
    found = []
    fields = ACCOUNT_FIELDS | LANE_FIELDS
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        if path.name == SCHEDULER and path.parent == PACKAGE:
            continue
        if path == Path(__file__).resolve():
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        owner = OWNERS.get(path.name) if path.parent == PACKAGE else None
        for attr, cls in _assigned_attributes(tree):
            if attr.attr not in fields:
                continue
            is_self = isinstance(attr.value, ast.Name) and attr.value.id == "self"
            if owner is not None and cls == owner[0] and is_self and attr.attr in owner[1]:
                continue  # the owning class keeping its own state (e.g. its failure run)
            found.append(f"{path.relative_to(PACKAGE.parent)}:{attr.lineno}: .{attr.attr}")
    return found


def test_only_the_dispatcher_assigns_scheduling_fields() -> None:
    assert offenders() == []


def test_tests_benchmarks_and_examples_use_the_dispatchers_verbs() -> None:
    assert offenders([PACKAGE.parent / d for d in OUTSIDE]) == []


def test_the_scheduling_field_check_finds_an_assignment() -> None:
    # The check itself, on a snippet: these are what it must catch.
    tree = ast.parse(
        "acc.lane = other\n"
        "lane.cooldown_until_at += 5\n"
        "a.reserved, b.retired = True, True\n"
        "setattr(acc, 'disabled_reason', 'x')\n"
    )
    caught = {attr.attr for attr, _ in _assigned_attributes(tree)}
    assert caught == {"lane", "cooldown_until_at", "reserved", "retired", "disabled_reason"}


def test_a_lanes_failure_run_is_read_only() -> None:
    from mtpoold._lane import ProxyLane

    lane = ProxyLane(key="k", name="p", type="socks5")
    with pytest.raises(AttributeError):
        lane.consecutive_failures = 3  # type: ignore[misc]
    lane.restore_failure_run(3)
    assert lane.consecutive_failures == 3
    lane.record_outcome(None)
    assert lane.consecutive_failures == 0


# --- the core pool on doubles: what it is handed is what it uses ----------------------------------


class _Failing(Exception):
    """What the double client raises; only the double `classify` knows it."""


@attrs.define(eq=False)
class _TrioClient:
    """A client double on trio alone (no asyncio): the first call of all raises what the
    shared script holds, the others answer."""

    account: str
    script: list[BaseException]
    up: bool = False

    async def connect(self) -> None:
        self.up = True

    async def call(self, method: str, args: Any) -> dict[str, Any]:
        await trio.sleep(0.1)
        if self.script:
            raise self.script.pop()
        return {"account": self.account, "method": method}

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        return {"account": self.account}

    async def get_messages(self, peer: str | int, ids: Any) -> dict[str, Any]:
        return {str(i): {"exists": True} for i in ids}

    async def disconnect(self) -> None:
        self.up = False

    def is_connected(self) -> bool:
        return self.up


@attrs.define(eq=False)
class _Lock:
    key: str
    released: list[str]

    def release(self) -> None:
        self.released.append(self.key)


@attrs.define
class _Side:
    """A Telegram side of doubles, recording what the pool asked of it."""

    script: list[BaseException] = attrs.field(factory=list)
    classified: list[str] = attrs.field(factory=list)
    checked: list[tuple[str, object]] = attrs.field(factory=list)
    released: list[str] = attrs.field(factory=list)

    def client_factory(self, config: Config) -> Callable[[AccountConfig], Client]:
        return lambda acc: _TrioClient(acc.id, self.script)

    def classify(self, exc: BaseException) -> Failure:
        self.classified.append(type(exc).__name__)
        if isinstance(exc, _Failing):
            return Failure(ErrorClass.FLOOD_WAIT, "scripted", retry_after_s=30.0)
        return Failure(ErrorClass.GENERIC, type(exc).__name__)

    def check_request(self, method: str, args: Mapping[str, Any], allow: Collection[str]) -> None:
        self.checked.append(("invoke", method))
        if method == "bad.Method":
            raise JobFailed(ErrorClass.INVALID_ARGUMENT, "unknown TL function")

    def check_peer(self, peer: str | int, argument: str) -> None:
        self.checked.append((argument, peer))

    def lock_sessions(self, accounts: Sequence[AccountConfig]) -> dict[str, _Lock]:
        return {a.id: _Lock(a.id, self.released) for a in accounts}

    def telegram(self) -> TelegramSide:
        return TelegramSide(
            client_factory=self.client_factory,
            classify=self.classify,
            check_request=self.check_request,
            check_peer=self.check_peer,
            lock_sessions=self.lock_sessions,
        )


async def test_a_core_pool_uses_the_telegram_side_it_is_handed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    side = _Side(script=[_Failing()])
    config = make_config(
        tmp_path, proxies={"p1": {"interval_s": 0}}, accounts={"a1": "p1", "a2": "p1"}
    )
    async with open_pool(config, side.telegram()) as pool:
        result = await pool.invoke("help.GetConfig", {})
        # the first account's failure, read by the side's classify, cooled it down (30 s)
        # and the job was rerouted to the other one
        assert side.classified == ["_Failing"]
        assert result.meta.attempts == 2
        states = {a.id: a.state for a in pool.statistics().accounts}
        other = result.value["account"]
        assert states == {other: "ready", ({"a1", "a2"} - {other}).pop(): "cooldown"}

        with pytest.raises(JobFailed) as info:
            await pool.invoke("bad.Method", {})
        assert info.value.error_class is ErrorClass.INVALID_ARGUMENT
        assert info.value.attempts == 0  # checked before any account was taken
        await pool.resolve("@someone")
        assert side.checked == [
            ("invoke", "help.GetConfig"),
            ("invoke", "bad.Method"),
            ("link_or_username", "@someone"),
        ]
        assert side.released == []
    assert sorted(side.released) == ["a1", "a2"]
