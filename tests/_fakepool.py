"""A fake `Pool` for the server and CLI tests: the public API of docs/CONTRACTS.md, no Telegram.

Behaviour of ``invoke`` is chosen by the TL method name:

* ``"wait"``: blocks until ``pool.release`` is set, then answers like ``"echo"``.
* ``"hang"``: blocks until cancelled.
* ``"fail:<ERROR_CLASS>"``: raises `JobFailed` of that class (retry_after_s 37, account
  ``"a1"``, 2 attempts).
* ``"crash"``: raises ``RuntimeError`` (a bug inside the pool).
* ``"unjsonable"``: returns a value JSON cannot encode.
* anything else (``"echo"``): returns ``{"_": method, "args": args}`` at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._stats import (
    AccountCooldowns,
    AccountStatistics,
    ClassState,
    LaneStatistics,
    PoolStatistics,
)


@attrs.frozen
class FakeMeta:
    account: str
    proxy_key: str
    attempts: int
    elapsed_ms: float
    shared: bool = False
    merged: int = 1
    age_s: float = 0.0


@attrs.frozen
class FakeResult:
    value: dict[str, Any]
    meta: FakeMeta


@attrs.define(eq=False)
class FakePool:
    release: trio.Event = attrs.field(factory=trio.Event)
    started: int = 0  # jobs that reached the pool
    finished: int = 0  # jobs that returned or raised (not cancelled)
    cancelled: int = 0  # jobs cancelled while running
    waiting: int = 0  # jobs blocked in "wait" right now
    cleared: list[tuple[str, str | None]] = attrs.field(factory=list)  # clear_cooldown calls
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = attrs.field(factory=list)
    disabled: dict[str, str | None] = attrs.field(factory=lambda: {"a1": None, "a2": None})
    orphaned: list[str] = attrs.field(factory=lambda: ["old-1"])
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_waiting(self, n: int) -> None:
        """Wait until ``n`` jobs are blocked in ``"wait"``."""
        while self.waiting < n:
            await self._changed.wait()

    async def wait_started(self, n: int) -> None:
        while self.started < n:
            await self._changed.wait()

    async def _job(self, kind: str, *args: Any, **kw: Any) -> FakeResult:
        self.calls.append((kind, args, kw))
        self.started += 1
        self._notify()
        try:
            method = args[0] if kind == "invoke" else kind
            if method == "wait":
                self.waiting += 1
                self._notify()
                try:
                    await self.release.wait()
                finally:
                    self.waiting -= 1
            elif method == "hang":
                self.waiting += 1
                self._notify()
                try:
                    await trio.sleep_forever()
                finally:
                    self.waiting -= 1
            else:
                await trio.lowlevel.checkpoint()
            if isinstance(method, str) and method.startswith("fail:"):
                raise JobFailed(
                    ErrorClass[method[5:]],
                    f"fake {method[5:]}",
                    retry_after_s=37.0,
                    account="a1",
                    attempts=2,
                )
            if method == "crash":
                raise RuntimeError("boom")
            value: dict[str, Any] = {
                "_": method,
                "args": args[1] if kind == "invoke" else list(args),
            }
            if method == "unjsonable":
                value = {"x": object()}
            self.finished += 1
            return FakeResult(value, FakeMeta("a1", "no_proxy", 1, 12.5))
        except trio.Cancelled:
            self.cancelled += 1
            raise
        except BaseException:
            self.finished += 1
            raise
        finally:
            self._notify()

    async def invoke(
        self,
        method: str,
        args: Mapping[str, Any],
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        **cache: float,  # max_age_s, recorded when given
    ) -> FakeResult:
        return await self._job(
            "invoke",
            method,
            dict(args),
            deadline_s=deadline_s,
            account=account,
            tags=tuple(tags),
            **cache,
        )

    async def resolve(
        self,
        link_or_username: str,
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        **cache: float,
    ) -> FakeResult:
        return await self._job(
            "resolve",
            link_or_username,
            deadline_s=deadline_s,
            account=account,
            tags=tuple(tags),
            **cache,
        )

    async def get_messages(
        self,
        peer: str | int,
        ids: Sequence[int] | None = None,
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        **cache: float,
    ) -> FakeResult:
        return await self._job(
            "get_messages",
            peer,
            None if ids is None else list(ids),
            deadline_s=deadline_s,
            account=account,
            tags=tuple(tags),
            **cache,
        )

    def disable_account(self, account_id: str, reason: str | None = None) -> str:
        if account_id not in self.disabled:
            raise KeyError(account_id)
        kept = reason or self.disabled[account_id] or "disabled by operator"
        self.disabled[account_id] = kept
        return kept

    def enable_account(self, account_id: str, *, force: bool = False) -> None:
        if account_id not in self.disabled:
            raise KeyError(account_id)
        reason = self.disabled[account_id] or ""
        if reason.startswith("USER_DEACTIVATED:") and not force:
            raise ValueError(f"account {account_id!r} was deactivated by Telegram")
        self.disabled[account_id] = None

    def cooldowns(self, account_id: str) -> AccountCooldowns:
        if account_id not in self.disabled:
            raise KeyError(account_id)
        return AccountCooldowns(
            id=account_id,
            cooldown_remaining_s=0.0,
            rate_classes=(
                ClassState(
                    rate_class="resolve",
                    cooldown_remaining_s=86000.0,
                    cause="FLOOD_WAIT: FLOOD_WAIT_86400 (420)",
                    budget_left={"per_hour": 25, "per_day": 100},
                    budget_frees_in_s=0.0,
                ),
            ),
        )

    def clear_cooldown(self, account_id: str, rate_class: str | None = None) -> tuple[str, ...]:
        if account_id not in self.disabled:
            raise KeyError(account_id)
        if rate_class not in (None, "resolve", "read"):
            raise ValueError(f"no rate class {rate_class!r} (known: read, resolve)")
        self.cleared.append((account_id, rate_class))
        return ("resolve",) if rate_class in (None, "resolve") else ()

    def begin_shutdown(self) -> None:
        """The daemon's first SIGTERM: nothing waits for an account here."""

    def forget_account(self, account_id: str) -> bool:
        if account_id in self.disabled:
            raise ValueError(
                f"account {account_id!r} is in the config; remove it from the config first"
            )
        if account_id not in self.orphaned:
            return False
        self.orphaned.remove(account_id)
        return True

    def jobs(self) -> tuple[object, ...]:
        return ()

    def statistics(self, *, accounts: bool = True) -> PoolStatistics:
        lane = LaneStatistics(
            key="0123456789abcdef",
            name="proxy-one",
            type="socks5",
            capacity=2,
            in_flight=1,
            waiting=3,
            next_slot_in_s=1.25,
            interval_s=2.0,
            calls=42,
            errors_by_class={"FLOOD_WAIT": 2, "STREAM_CLOSED": 1},
            cooldown_remaining_s=0.0,
            consecutive_failures=0,
        )
        accounts = tuple(
            AccountStatistics(
                id=acc,
                proxy_key=lane.key,
                proxy_name=lane.name,
                state="disabled" if reason else "ready",
                connected=reason is None,
                cooldown_remaining_s=0.0 if acc == "a1" else 12.0,
                disabled_reason=reason,
                calls_ok=10,
                calls_failed=1,
                errors_by_class={"FLOOD_WAIT": 1},
                last_error_class="FLOOD_WAIT",
                last_error_message="FLOOD_WAIT_37 (420)",
                last_used_s_ago=3.5,
                tags=("main",),
            )
            for acc, reason in self.disabled.items()
        )
        return PoolStatistics(
            uptime_s=3725.0,
            jobs_in_flight=self.started - self.finished - self.cancelled,
            jobs_ok=self.finished,
            jobs_failed=0,
            accounts_total=len(accounts),
            accounts_ready=sum(a.state == "ready" for a in accounts),
            accounts_cooling=0,
            accounts_disabled=sum(a.state == "disabled" for a in accounts),
            config_generation=1,
            config_loaded_at="2025-01-01T00:00:00Z",
            orphaned_accounts=tuple(self.orphaned),
            proxies=(lane,),
            accounts=accounts,
        )
