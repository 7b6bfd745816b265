"""A lane's identity is the proxy's name: no password hash anywhere, stable across password
changes, and old state-store rows (keyed by the PHP system's SHA-1) are moved to it."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from mtpoold._compose import open_pool
from mtpoold._config import Config, parse_config, proxy_key
from mtpoold._daemon import _php_proxy_key, migrate_proxy_keys
from mtpoold._store import StateStore, StoredProxy

from _fakeclient import World, make_config


def config(password: str) -> Config:
    return parse_config(
        {
            "proxies": [
                {"name": "eu1", "type": "socks5", "host": "10.0.0.1", "port": 1080,
                 "username": "u", "password": password},
                {"name": "eu2", "type": "http", "host": "10.0.0.2", "port": 3128},
            ],
        },
        base_dir=Path("."),
    )  # fmt: skip


def test_old_rows_move_to_the_proxy_name_and_survive_a_password_change(tmp_path: Path) -> None:
    old = config("s3cret-password")
    p1, p2 = old.proxies
    legacy1, legacy2 = _php_proxy_key(p1), _php_proxy_key(p2)
    assert len(legacy1) == 16 and legacy1 != proxy_key(p1) == "eu1"
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        store.save_proxy(StoredProxy(key=legacy1, cooldown_until_unix=2e9, consecutive_failures=3))
        store.save_proxy(StoredProxy(key=legacy2, consecutive_failures=1))
        store.save_proxy(StoredProxy(key="eu2", consecutive_failures=7))  # newer row wins
        store.save_proxy(StoredProxy(key="no_proxy", consecutive_failures=2))
        assert migrate_proxy_keys(store, old) == 1
        rows = store.load().proxies
        assert set(rows) == {"eu1", "eu2", "no_proxy"}  # no SHA-1 of a password left
        assert (rows["eu1"].cooldown_until_unix, rows["eu1"].consecutive_failures) == (2e9, 3)
        assert rows["eu2"].consecutive_failures == 7
        # the password changes: the key does not, the row stays the lane's
        new = config("another-password")
        assert proxy_key(new.proxies[0]) == "eu1"
        assert migrate_proxy_keys(store, new) == 0
        assert store.load().proxies["eu1"].consecutive_failures == 3


async def test_a_changed_proxy_password_reconnects_on_the_same_lane(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The lane's identity ignores the password, so the reload compares the proxy itself:
    new credentials reconnect the account; the lane (its cooldown, statistics) stays."""
    world = World()
    before = make_config(tmp_path, proxies={"p1": {"password": "old-pw", "username": "u"}},
                         accounts={"a1": "p1"})  # fmt: skip
    async with open_pool(before, client_factory=world.factory()) as pool:
        await pool.invoke("help.GetConfig", {})
        lane = pool.statistics().proxies[0]
        after = make_config(tmp_path, proxies={"p1": {"password": "new-pw", "username": "u"}},
                            accounts={"a1": "p1"})  # fmt: skip
        summary = await pool.reload(after)
        assert summary.reconnected == ("a1",)
        r = await pool.invoke("help.GetConfig", {})
        assert r.meta.proxy_key == "p1" == lane.key
        assert [p.key for p in pool.statistics().proxies] == ["p1"]
        # tuning alone does not reconnect
        tuned = make_config(tmp_path, accounts={"a1": "p1"},
                            proxies={"p1": {"password": "new-pw", "username": "u",
                                            "capacity": 3}})  # fmt: skip
        assert (await pool.reload(tuned)).reconnected == ()
    assert len(world.clients) == 2
