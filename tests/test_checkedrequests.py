"""`mtpoold._checkedrequests.CheckedRequests` and the pool's use of it: an ``invoke``
identical to one that passed `check_request` skips the check; anything else is checked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from mtpoold._checkedrequests import MAX_KEY_CHARS, MAX_REMEMBERED, MISS, CheckedRequests
from mtpoold._compose import open_pool
from mtpoold._config import Config
from mtpoold._errors import JobFailed

from _fakeclient import World, make_config


def test_remembers_what_passed_under_the_same_allow_list() -> None:
    memo = CheckedRequests()
    allow: tuple[str, ...] = ()
    assert memo.peer_key("m", "k", allow) is MISS
    memo.remember("m", "k", "peer:1")
    memo.remember("m", "k2", None)
    assert memo.peer_key("m", "k", allow) == "peer:1"
    assert memo.peer_key("m", "k2", allow) is None  # remembered: no peer
    assert memo.peer_key("M", "k", allow) is MISS  # the method as written is part of the key
    # another allow list (a reload): everything is checked again
    assert memo.peer_key("m", "k", ("auth.LogOut",)) is MISS
    assert len(memo) == 0


def test_is_bounded_oldest_out_and_skips_long_keys() -> None:
    memo = CheckedRequests()
    allow: tuple[str, ...] = ()
    memo.peer_key("m", "", allow)  # binds the allow list
    for i in range(MAX_REMEMBERED + 10):
        memo.remember("m", f"k{i}", None)
    assert len(memo) == MAX_REMEMBERED
    assert memo.peer_key("m", "k0", allow) is MISS
    assert memo.peer_key("m", f"k{MAX_REMEMBERED + 9}", allow) is None
    memo.remember("m", "x" * (MAX_KEY_CHARS + 1), None)
    assert memo.peer_key("m", "x" * (MAX_KEY_CHARS + 1), allow) is MISS


def _counting(pool: Any) -> list[str]:
    """Wrap the pool's request check: the methods it was asked to check, in order."""
    seen: list[str] = []
    real = pool._telegram.check_request

    def check(method: str, args: Mapping[str, Any], allow: Collection[str]) -> None:
        seen.append(method)
        real(method, args, allow)

    pool._telegram = attrs.evolve(pool._telegram, check_request=check)
    return seen


@contextlib.asynccontextmanager
async def _counting_pool(tmp_path: Path) -> AsyncIterator[tuple[Any, list[str], World]]:
    """A pool of one account on an ungated lane, the methods it checks (`_counting`), and
    its client double's world."""
    world = World()
    async with open_pool(_config(tmp_path), client_factory=world.factory()) as pool:
        yield pool, _counting(pool), world


def _config(tmp_path: Path, **policy: Any) -> Config:
    return make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0, "capacity": 4}},
        accounts={"a1": "p1"},
        policy=policy or None,
    )


async def test_an_identical_read_only_invoke_is_checked_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _counting_pool(tmp_path) as (pool, seen, world):
        for _ in range(3):
            await pool.invoke("help.GetConfig", {})
        assert seen == ["help.GetConfig"]
        # other arguments, another spelling, a pinned account: a new key, checked
        await pool.invoke("contacts.ResolveUsername", {"username": "abc"})
        await pool.invoke("contacts.ResolveUsername", {"username": "abd"})
        await pool.invoke("help.getConfig", {})
        await pool.invoke("help.GetConfig", {}, account="a1")
        assert seen == ["help.GetConfig"] + ["contacts.ResolveUsername"] * 2 + [
            "help.getConfig",
            "help.GetConfig",
        ]
        await pool.invoke("contacts.ResolveUsername", {"username": "abc"})
        assert len(seen) == 5
        # a write is never remembered: checked on every job
        for _ in range(2):
            await pool.invoke("messages.ReadHistory", {"peer": "@abc", "max_id": 0})
        assert seen[5:] == ["messages.ReadHistory"] * 2


async def test_a_refused_request_is_refused_every_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _counting_pool(tmp_path) as (pool, seen, world):
        for _ in range(3):
            with pytest.raises(JobFailed, match=r"^INVALID_ARGUMENT: .*unknown argument"):
                await pool.invoke("help.GetConfig", {"bogus": 1})
        assert seen == ["help.GetConfig"] * 3
        with pytest.raises(JobFailed, match=r"^INVALID_ARGUMENT"):
            await pool.invoke("channels.GetMessages", {"channel": "@abc", "id": [2**40]})
    assert not any(kind == "call" for _, kind, _ in world.starts)


async def test_a_reload_with_other_allowed_methods_checks_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with _counting_pool(tmp_path) as (pool, seen, world):
        await pool.invoke("help.GetConfig", {})
        await pool.invoke("help.GetConfig", {})
        assert seen == ["help.GetConfig"]
        await pool.reload(_config(tmp_path, allow_methods=["auth.LogOut"]))
        await pool.invoke("help.GetConfig", {})
        assert seen == ["help.GetConfig"] * 2
