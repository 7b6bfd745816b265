"""A scriptable test double of one account's MTProto client, run through trio-asyncio.

Each call's behaviour is taken from a per-account script, in order; an empty script
answers ``{"ok": True, "account": id}``. The work happens on the asyncio side through
``trio_asyncio.aio_as_trio``, so cancellation and stray asyncio futures are exercised
exactly as with Telethon.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio
import trio_asyncio

from mtpoold._config import AccountConfig, Config, parse_config


@attrs.frozen
class Sleep:
    """Take ``seconds`` (on the asyncio side) before answering ``then``."""

    seconds: float
    then: Any = None


@attrs.define
class World:
    """Shared record of everything the fake clients did."""

    scripts: dict[str, collections.deque[Any]] = attrs.field(
        factory=lambda: collections.defaultdict(collections.deque)
    )
    connect_scripts: dict[str, collections.deque[Any]] = attrs.field(
        factory=lambda: collections.defaultdict(collections.deque)
    )
    starts: list[tuple[str, str, float]] = attrs.field(factory=list)  # (account, kind, time)
    active: collections.Counter[str] = attrs.field(factory=collections.Counter)
    max_active: collections.Counter[str] = attrs.field(factory=collections.Counter)
    clients: list[FakeClient] = attrs.field(factory=list)
    asyncio_tasks: list[asyncio.Task[Any]] = attrs.field(factory=list)

    def script(self, account: str, *actions: Any) -> None:
        self.scripts[account].extend(actions)

    def factory(self) -> Callable[[AccountConfig], FakeClient]:
        def make(acc: AccountConfig) -> FakeClient:
            client = FakeClient(acc.id, self)
            self.clients.append(client)
            return client

        return make

    def calls_of(self, account: str) -> list[float]:
        return [t for a, kind, t in self.starts if a == account and kind == "call"]


@attrs.define(eq=False)
class FakeClient:
    account: str
    world: World
    connected: bool = False
    disconnects: int = 0

    async def _play(self, script: collections.deque[Any], default: Any) -> Any:
        action = script.popleft() if script else default

        async def on_asyncio() -> Any:
            self.world.asyncio_tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            act = action
            while isinstance(act, Sleep):
                await asyncio.sleep(act.seconds)
                act = act.then if act.then is not None else default
            if isinstance(act, BaseException):
                raise act
            return act

        return await trio_asyncio.aio_as_trio(on_asyncio)()

    async def connect(self) -> None:
        self.world.starts.append((self.account, "connect", trio.current_time()))
        await self._play(self.world.connect_scripts[self.account], None)
        self.connected = True

    async def _call(self) -> dict[str, Any]:
        assert self.connected, "call on a disconnected client"
        self.world.starts.append((self.account, "call", trio.current_time()))
        self.world.active[self.account] += 1
        self.world.max_active[self.account] = max(
            self.world.max_active[self.account], self.world.active[self.account]
        )
        try:
            return await self._play(
                self.world.scripts[self.account], {"ok": True, "account": self.account}
            )
        finally:
            self.world.active[self.account] -= 1

    async def call(self, method: str, args: Any) -> dict[str, Any]:
        return await self._call()

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        return await self._call()

    async def get_messages(self, peer: str | int, ids: Any) -> dict[str, Any]:
        return await self._call()

    async def disconnect(self) -> None:
        if self.connected:
            self.disconnects += 1
        self.connected = False

    def is_connected(self) -> bool:
        return self.connected


def _dir_tag(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


def make_config(
    tmp_path: Path,
    *,
    proxies: dict[str, dict[str, Any]] | None = None,
    accounts: dict[str, str | None] | None = None,
    tags: dict[str, list[str]] | None = None,
    policy: dict[str, Any] | None = None,
    telegram: dict[str, Any] | None = None,
    direct: dict[str, Any] | None = None,
    economy: dict[str, Any] | None = None,
) -> Config:
    """A config of accounts (id -> proxy name or None) over named socks5 proxies.

    ``economy``: ``[economy]`` keys over `NO_SHARING` (identical jobs are neither shared nor
    merged unless a test asks: most tests count one call per job).
    """
    proxies = proxies if proxies is not None else {"p1": {}, "p2": {}}
    accounts = accounts if accounts is not None else {"a1": "p1", "a2": "p1", "a3": "p2"}
    data: dict[str, Any] = {
        "proxies": [
            {"name": name, "type": "socks5", "host": "127.0.0.1", "port": 1080 + i, **extra}
            for i, (name, extra) in enumerate(proxies.items())
        ],
        "accounts": [
            {
                "id": acc_id,
                "api_id": 1000 + i,
                "api_hash": f"{i:032x}",
                # distinct per test directory: string sessions are locked machine-wide by
                # their text, and tests (or concurrent test runs) must not meet there
                "session_string": f"fake-session-{acc_id}-{_dir_tag(tmp_path)}",
                **({"proxy": proxy} if proxy else {}),
                **({"tags": (tags or {})[acc_id]} if acc_id in (tags or {}) else {}),
            }
            for i, (acc_id, proxy) in enumerate(accounts.items())
        ],
    }
    if policy:
        data["policy"] = policy
    if telegram:
        data["telegram"] = telegram
    if direct:
        data["direct"] = direct
    data["economy"] = {**NO_SHARING, **(economy or {})}
    return parse_config(data, base_dir=tmp_path)


#: ``[economy]`` keys that make every job its own call (shared and merged jobs off).
NO_SHARING: dict[str, Any] = {"share_identical": False, "merge_get_messages": False}
