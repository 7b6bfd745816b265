"""The human views of ``mtpoold status`` (`mtpoold._statusview`), for a fleet of thousands:
1,000 accounts on 100 proxies in a real `PoolStatistics`, unstructured as the daemon sends it."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import cattrs
import pytest
import trio
import trio.testing
from rich.console import Console

from mtpoold._compose import open_pool
from mtpoold._stats import (
    AccountState,
    AccountStatistics,
    ClassState,
    LaneStatistics,
    PoolStatistics,
)
from mtpoold._statusview import (
    AccountFilter,
    format_duration,
    format_short,
    held_back,
    render_accounts,
    render_jobs,
    render_proxies,
    render_status,
)

from _fakeclient import World, make_config

LONG_ERROR = (
    "GENERIC: ConnectionError: the server closed the connection while reading the reply"
    " of messages.GetHistory\n" + "traceback-like detail " * 30
)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, None, 12.5, 65, 3725, 90061)] == [
        "-",
        "-",
        "12.5s",
        "1m 05s",
        "1h 02m 05s",
        "1d 01h 01m",
    ]


def test_format_short() -> None:
    assert [format_short(s) for s in (0, None, 2.5, 42, 303, 86340, 183600)] == [
        "-",
        "-",
        "2.5s",
        "42s",
        "5m03s",
        "23h59m",
        "2d03h",
    ]


def _lane(i: int, *, cooling_s: float = 0.0) -> LaneStatistics:
    return LaneStatistics(
        key=f"proxy-{i:02d}",
        name=f"proxy-{i:02d}",
        type="socks5",
        capacity=4,
        in_flight=1 if i % 3 == 0 else 0,
        waiting=i % 5,
        next_slot_in_s=0.4,
        interval_s=2.0,
        calls=1000 + i,
        errors_by_class={"FLOOD_WAIT": 3, "STREAM_CLOSED": 1, "GENERIC": 2} if i % 2 else {},
        cooldown_remaining_s=cooling_s,
        cooldown_cause="PROXY_UNAVAILABLE: SOCKS5 proxy refused the connection"
        if cooling_s
        else None,
        consecutive_failures=2 if cooling_s else 0,
    )


def _account(n: int, lane: LaneStatistics, state: AccountState, **kw: Any) -> AccountStatistics:
    fields: dict[str, Any] = {
        "id": f"acct-{n:04d}",
        "proxy_key": lane.key,
        "proxy_name": lane.name,
        "state": state,
        "connected": state in (AccountState.READY, AccountState.BUSY),
        "cooldown_remaining_s": 0.0,
        "disabled_reason": None,
        "calls_ok": 50,
        "calls_failed": 1,
        "caller_errors": 3,
        "errors_by_class": {"FLOOD_WAIT": 1},
        "last_error_class": "FLOOD_WAIT",
        "last_error_message": "FLOOD_WAIT_37 (420)",
        "last_used_s_ago": float(n),
        "tags": ("main",) if n % 2 else ("spare",),
    }
    fields.update(kw)
    return AccountStatistics(**fields)


def _fleet() -> dict[str, Any]:
    """1,000 accounts on 100 proxies: proxy-07 cooling 42 s (its 10 accounts held back by it
    alone), proxy-99 used by none; FLOOD_WAIT cooldowns on rate classes, disabled ones with
    long reasons, failing ones with long multi-line errors, 4 busy, 1 retired."""
    lanes = [_lane(i, cooling_s=42.0 if i == 7 else 0.0) for i in range(100)]
    accounts = []
    for n in range(1000):
        lane = lanes[n % 99]  # proxy-99 carries no account
        if lane.key == "proxy-07":
            accounts.append(_account(n, lane, AccountState.COOLDOWN))
        elif n % 50 == 1:
            classes = (
                ClassState(
                    rate_class="resolve",
                    cooldown_remaining_s=86340.0,
                    cause="FLOOD_WAIT: FLOOD_WAIT_86400 (420)",
                    budget_left={"per_hour": 0, "per_day": 98},
                    budget_frees_in_s=0.0,
                ),
                ClassState(
                    rate_class="join",
                    cooldown_remaining_s=600.0,
                    cause="FLOOD_WAIT: FLOOD_WAIT_600 (420)",
                    budget_left={},
                    budget_frees_in_s=0.0,
                ),
                ClassState(
                    rate_class="read",
                    cooldown_remaining_s=0.0,
                    cause=None,
                    budget_left={"per_hour": 0},
                    budget_frees_in_s=1800.0,
                ),
            )
            accounts.append(_account(n, lane, AccountState.READY, rate_classes=classes))
        elif n % 50 == 2:
            accounts.append(
                _account(
                    n,
                    lane,
                    AccountState.DISABLED,
                    disabled_reason="SESSION_REVOKED: the session no longer works (revoked,"
                    " expired, duplicated, banned or deactivated); re-authorize this account",
                )
            )
        elif n % 50 == 3:
            accounts.append(
                _account(
                    n,
                    lane,
                    AccountState.COOLDOWN,
                    cooldown_remaining_s=3725.0,
                    cooldown_cause="GENERIC: ConnectionError: the server closed the connection",
                    calls_ok=1,
                    calls_failed=9,
                    last_error_class="GENERIC",
                    last_error_message=LONG_ERROR,
                )
            )
        elif n in (10, 20, 30, 40):
            accounts.append(_account(n, lane, AccountState.BUSY))
        elif n == 999:
            accounts.append(_account(n, lane, AccountState.RETIRED))
        else:
            accounts.append(_account(n, lane, AccountState.READY if n % 3 else AccountState.IDLE))
    by_state = {s.value: 0 for s in AccountState}
    for a in accounts:
        by_state[a.state] += 1
    stats = PoolStatistics(
        uptime_s=7200.0,
        jobs_in_flight=4,
        jobs_ok=12345,
        jobs_failed=67,
        accounts_total=len(accounts),
        accounts_by_state=by_state,
        accounts_ready=by_state["ready"] + by_state["idle"],
        accounts_cooling=by_state["cooldown"],
        accounts_disabled=by_state["disabled"],
        config_generation=3,
        config_loaded_at="2026-12-01T10:00:00Z",
        orphaned_accounts=("gone-1",),
        proxies=tuple(lanes),
        accounts=tuple(accounts),
    )
    unstructured: dict[str, Any] = cattrs.unstructure(stats)
    return unstructured


def _render(renderable: Any, width: int = 80) -> str:
    """Rendered on a Console that is not a terminal (like piped output), ``width`` wide."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    assert not console.is_terminal
    console.print(renderable)
    return out.getvalue()


@pytest.fixture(scope="module")
def fleet() -> dict[str, Any]:
    return _fleet()


def test_status_of_1000_accounts_fits_80_columns(fleet: dict[str, Any]) -> None:
    out = _render(render_status(fleet))
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80, max(lines, key=len)
    # the summary first, and it adds up to the total
    summary = next(line for line in lines if line.startswith("accounts 1000:"))
    counts = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", summary.split(":", 1)[1])}
    assert sum(counts.values()) == 1000
    assert set(counts) <= {s.value for s in AccountState}
    assert counts["busy"] == 4 and counts["retired"] == 1
    assert lines.index(summary) < out.splitlines().index(
        next(line for line in lines if line.startswith("Proxies"))
    )
    assert "jobs: 4 in flight, 12345 ok, 67 failed" in out
    # every lane, also the one no account uses
    proxy_rows = [line for line in lines if line.startswith("proxy-")]
    assert len(proxy_rows) == 100
    assert re.search(r"^proxy-99 .* 0 ", out, re.M)
    # the cooling proxy, its time left and cause
    assert re.search(r"^proxy-07 .* 42s \(PROXY_UNAVAILABLE\) *$", out, re.M)
    # headers whole, one line each
    assert re.search(r"^id +proxy +state +held back +failed +last error *$", out, re.M)
    # the caller's errors apart from the accounts' failures
    assert "caller errors 3000 (PEER_NOT_FOUND, INVALID_ARGUMENT; not failures)" in out
    assert "ne…" not in out
    # only the accounts that need attention, capped
    assert "Accounts needing attention (" in out
    assert re.search(r"… and \d+ more \(--wide / --state\)", out)
    assert "traceback-like" not in out  # the last error is one short cell


def test_status_shows_why_each_account_is_held_back(fleet: dict[str, Any]) -> None:
    out = _render(render_status(fleet, only=AccountFilter(proxies=["proxy-07"])))
    assert max(map(len, out.splitlines())) <= 80
    rows = [line for line in out.splitlines() if line.startswith("acct-")]
    assert len(rows) == 11  # 1000 accounts over 99 lanes
    assert all("proxy proxy-07 cooling 42s" in row for row in rows), rows
    out = _render(render_status(fleet, sort="cooldown"))
    first = next(line for line in out.splitlines() if line.startswith("acct-"))
    assert "resolve 23h59m (FLOOD_WAIT) +2 more" in first  # the longest held back first
    assert "cooling 1h02m (GENERIC)" in out  # an account's own cooldown and its cause


def test_status_wide_shows_every_account_and_column(fleet: dict[str, Any]) -> None:
    out = _render(render_status(fleet, wide=True), width=240)
    ids = set(re.findall(r"^(acct-\d{4}) ", out, re.M))
    assert len(ids) == 1000
    assert "… and" not in out
    for header in ("key", "tags", "ok", "used", "disabled reason", "caller"):
        assert header in out
    assert "SESSION_REVOKED: the session no longer works" in out


def test_status_filters(fleet: dict[str, Any]) -> None:
    out = _render(render_status(fleet, only=AccountFilter(states=["disabled"]), limit=1000))
    rows = [line for line in out.splitlines() if line.startswith("acct-")]
    disabled = [a for a in fleet["accounts"] if a["state"] == "disabled"]
    assert len(rows) == len(disabled) > 10 and all(" disabled " in row for row in rows)
    assert all("disabled: SESSION_REVOKED" in row for row in rows)  # the reason, cut to fit
    out = _render(render_status(fleet, only=AccountFilter(tags=["spare"], states=["busy"])))
    rows = [line for line in out.splitlines() if line.startswith("acct-")]
    assert [row.split()[0] for row in rows] == ["acct-0010", "acct-0020", "acct-0030", "acct-0040"]
    out = _render(render_status(fleet, only=AccountFilter(proxies=["proxy-99"])))
    assert "Accounts matching (0 of 1000)" in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("proxy-")] == [
        "proxy-99"
    ]


def test_status_sorts(fleet: dict[str, Any]) -> None:
    def first_ids(sort: str) -> list[str]:
        out = _render(render_status(fleet, wide=True, sort=sort), width=240)
        return re.findall(r"^(acct-\d{4}) ", out, re.M)[:3]

    assert first_ids("id") == ["acct-0000", "acct-0001", "acct-0002"]
    assert first_ids("last-used") == ["acct-0000", "acct-0001", "acct-0002"]
    assert first_ids("failures")[0] == "acct-0003"  # 9 failed calls
    state_first = _render(render_status(fleet, sort="state"))
    first = next(line for line in state_first.splitlines() if line.startswith("acct-"))
    assert " disabled " in first  # the worst first


def test_accounts_and_proxies_lists_fit_the_console(fleet: dict[str, Any]) -> None:
    for renderable in (render_accounts(fleet), render_proxies(fleet)):
        out = _render(renderable, width=120)
        assert max(map(len, out.splitlines())) <= 120


def test_text_from_outside_cannot_drive_the_terminal() -> None:
    """A disable reason (any token holder sets one) or an error message printed raw: its ESC
    sequences recoloured the terminal, a bidi override reversed the line."""
    lane = _lane(0)
    hostile = "flagged \x1b[31mRED\x1b]0;owned\x07 \u202etxt\nnext"
    accounts = (
        _account(1, lane, AccountState.DISABLED, disabled_reason=hostile),
        _account(2, lane, AccountState.READY, last_error_message=hostile, calls_failed=9),
    )
    stats = cattrs.unstructure(
        PoolStatistics(
            uptime_s=1.0, jobs_in_flight=0, jobs_ok=0, jobs_failed=0, accounts_total=2,
            accounts_by_state={"disabled": 1, "ready": 1}, accounts_ready=1,
            accounts_cooling=0, accounts_disabled=1, config_generation=1,
            config_loaded_at="2026-12-01T10:00:00Z", orphaned_accounts=(),
            proxies=(lane,), accounts=accounts,
        )
    )  # fmt: skip
    for out in (
        _render(render_status(stats, wide=True), 240),
        _render(render_accounts(stats), 240),
    ):
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, out
        assert "flagged \\x1b[31mRED" in out, out


def test_status_summary_counts_the_direct_lane_apart_from_the_proxies() -> None:
    """Two proxies and the direct lane: "proxies 2 + direct", as check-config says 2."""
    lanes = [{"key": k, "name": k, "type": t} for k, t in [("p1", "socks5"), ("p2", "http")]]
    stats = {"accounts_total": 0, "proxies": [*lanes, {"key": "no_proxy", "type": "direct"}]}
    assert "\nproxies 2 + direct: 0 cooling" in _render(render_status(stats))
    assert "\nproxies 2: 0 cooling" in _render(render_status({"proxies": lanes}))


def test_status_summary_only_reply() -> None:
    """A ``{"summary": true}`` reply (no accounts) still counts by state."""
    stats = _fleet()
    stats["accounts"] = []
    out = _render(render_status(stats))
    assert "accounts 1000: idle" in out
    assert "Accounts" not in out.replace("accounts 1000", "")


def test_render_jobs_fits_80_columns() -> None:
    reply = {
        "jobs": [
            {
                "job": 12,
                "connection": "127.0.0.1:50432",
                "rpc_id": 7,
                "method": "contacts.ResolveUsername",
                "rate_classes": ["resolve"],
                "age_s": 12.5,
                "deadline_left_s": 167.5,
                "attempts": 0,
                "account": None,
                "shared": False,
                "state": "waiting_account",
                "waiting_for": {"why": "all 4 busy", "position": 1, "until_s": 3.0},
            },
            {
                "job": 13,
                "connection": None,
                "rpc_id": None,
                "method": "get_messages",
                "rate_classes": ["read"],
                "age_s": 1.0,
                "deadline_left_s": 179.0,
                "attempts": 1,
                "account": "a1",
                "shared": False,
                "state": "waiting_gate",
                "waiting_for": {"account": "a1", "lane": "p1", "position": 2, "slot_in_ms": 3900},
            },
        ]
    }
    out = _render(render_jobs(reply))
    assert max(map(len, out.splitlines())) <= 80
    assert "Jobs in flight (2)" in out
    assert "waiting_account #1: all 4 busy (3.0s)" in out
    assert "waiting_gate a1@p1 #2, 3900 ms" in out


def test_render_jobs_shows_the_whole_method_at_80_columns() -> None:
    """The method is never cut for the waits-for text: that goes on its own line below the
    job's row (cut there, if at all), each line <= 80."""
    waits = {"account": "acc-0001", "lane": "proxy-frankfurt-1", "elapsed_ms": 1200}
    reply = {
        "jobs": [
            {
                "job": 14,
                "rpc_id": "abc-123",
                "method": "messages.GetDiscussionMessage",
                "rate_classes": ["read"],
                "age_s": 1.0,
                "deadline_left_s": 179.0,
                "shared": True,
                "state": "in_call",
                "waiting_for": waits,
            },
            {
                "job": 15,
                "rpc_id": None,
                "method": "messages.SendMessage",
                "rate_classes": ["send"],
                "age_s": 2.0,
                "deadline_left_s": 60.0,
                "state": "waiting_account",
                "waiting_for": {"why": "every account it may use is cooling" * 3, "position": 1},
            },
        ]
    }
    lines = _render(render_jobs(reply)).splitlines()
    assert max(map(len, lines)) <= 80
    rows = [i for i, line in enumerate(lines) if "messages." in line]
    assert len(rows) == 2
    first, second = (lines[i] for i in rows)
    assert "messages.GetDiscussionMessage (shared)" in first and "…" not in first
    assert "messages.SendMessage" in second
    # the waits-for text: the line right below each job's row
    assert "in_call acc-0001@proxy-frankfurt-1 1200 ms" in lines[rows[0] + 1]
    assert (
        lines[rows[1] + 1]
        .lstrip()
        .lstrip("└ ")
        .startswith("waiting_account #1: every account it may use is cooling")
    )
    assert lines[rows[1] + 1].rstrip().endswith("…")


def test_cli_choices_follow_the_view_and_the_states() -> None:
    """`mtpoold status --state/--sort` list their choices without importing rich."""
    from mtpoold import _cliparser, _statusview

    assert _cliparser.STATUS_STATES == tuple(s.value for s in AccountState)
    assert _cliparser.STATUS_SORT_KEYS == _statusview.SORT_KEYS


async def test_status_of_a_real_pool_of_1000_accounts_fits_80_columns(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The same on a real pool (scripted clients): 1,000 accounts on 100 proxies, one proxy
    cooling, a proxy no account uses, the summary counting by state."""
    proxies = {f"px{i:02d}": {"interval_s": 0.0} for i in range(100)}
    accounts: dict[str, str | None] = {f"acc-{n:04d}": f"px{n % 99:02d}" for n in range(1000)}
    config = make_config(tmp_path, proxies=proxies, accounts=accounts)
    world = World()
    async with open_pool(config, client_factory=world.factory()) as pool:
        lane = pool._lanes["px07"]
        pool._dispatch.cool_down_lane(lane, trio.current_time() + 42, "PROXY_UNAVAILABLE: refused")
        pool.disable_account("acc-0000", "test")
        stats = cattrs.unstructure(pool.statistics())
    out = _render(render_status(stats))
    assert max(map(len, out.splitlines())) <= 80
    summary = next(line for line in out.splitlines() if line.startswith("accounts 1000:"))
    assert summary == "accounts 1000: idle 988, cooldown 11, disabled 1"
    assert "\nproxies 100: 1 cooling\n" in out
    assert re.search(r"^px07 .* 42s \(PROXY_UNAVAILABLE\) *$", out, re.M)
    assert re.search(r"^px99 +socks5 +0 ", out, re.M)  # no account uses it
    rows = [line for line in out.splitlines() if line.startswith("acc-")]
    assert sum("proxy px07 cooling 42s" in row for row in rows) == 11


def test_held_back_says_why_a_cluster_node_may_not_use_the_account() -> None:
    """Cluster mode: a ``remote`` account's reason (a PHP lock, another node's lease) is
    what holds it back, before any cooldown."""
    account = {"id": "a01", "proxy_key": "p0", "state": "remote"}
    assert held_back({**account, "remote_reason": "unheld: PHP lock held"}, {}) == (
        "unheld: PHP lock held"
    )
    assert held_back({**account, "remote_reason": None}, {}) == "-"
