"""Rich tables for ``mtpoold status``, drawn from the ``status`` reply.

Input is the JSON shape of ``cattrs.unstructure(pool.statistics())`` (``PoolStatistics`` in
``docs/CONTRACTS.md``). Missing keys show as ``-`` rather than failing, so a CLI and a daemon of
slightly different versions still talk. Every cell is plain `rich.text.Text`: account names,
reasons and error messages are never read as markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ._stats import AccountState

__all__ = [
    "format_duration",
    "render_accounts",
    "render_cooldowns",
    "render_proxies",
    "render_status",
]

_DASH = "-"


def format_duration(seconds: object) -> str:
    """``3725`` -> ``"1h 02m 05s"``; ``12.5`` -> ``"12.5s"``; ``0``/None -> ``"-"``.

    Args:
        seconds: A duration in seconds (anything else shows as ``"-"``).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        return _DASH
    if seconds < 60:
        return f"{seconds:.1f}s"
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _errors(by_class: object) -> str:
    if not isinstance(by_class, Mapping) or not by_class:
        return _DASH
    return ", ".join(f"{name} {count}" for name, count in sorted(by_class.items()))


def _cell(value: object) -> Text:
    if value is None or value == "":
        return Text(_DASH)
    if isinstance(value, float):
        return Text(f"{value:g}")
    return Text(str(value))


_STATE_STYLE: dict[str, str] = {
    AccountState.READY: "green",
    AccountState.BUSY: "cyan",
    AccountState.IDLE: "",
    AccountState.CONNECTING: "yellow",
    AccountState.COOLDOWN: "yellow",
    AccountState.DISABLED: "red",
    AccountState.RETIRED: "dim",
}


def _proxies_table(proxies: list[Mapping[str, Any]]) -> Table:
    table = Table(title="Proxies", title_justify="left", expand=False)
    for name, justify in [
        ("key", "left"),
        ("name", "left"),
        ("type", "left"),
        ("in flight", "right"),
        ("queue", "right"),
        ("next slot", "right"),
        ("calls", "right"),
        ("errors", "left"),
        ("cooldown", "right"),
    ]:
        no_wrap = name in ("key", "name")
        table.add_column(name, justify=justify, no_wrap=no_wrap)  # type: ignore[arg-type]
    for p in proxies:
        next_slot = p.get("next_slot_in_s")
        table.add_row(
            _cell(p.get("key")),
            _cell(p.get("name")),
            _cell(p.get("type")),
            Text(f"{p.get('in_flight', _DASH)}/{p.get('capacity', _DASH)}"),
            _cell(p.get("waiting")),
            Text(f"{next_slot:.1f}s" if isinstance(next_slot, int | float) else _DASH),
            _cell(p.get("calls")),
            Text(_errors(p.get("errors_by_class"))),
            Text(format_duration(p.get("cooldown_remaining_s")), style="yellow"),
        )
    return table


def _accounts_table(accounts: list[Mapping[str, Any]]) -> Table:
    table = Table(title="Accounts", title_justify="left", expand=False)
    for name, justify in [
        ("id", "left"),
        ("proxy", "left"),
        ("state", "left"),
        ("cooldown", "right"),
        ("rate classes", "left"),
        ("disabled reason", "left"),
        ("calls ok/failed", "right"),
        ("last error", "left"),
    ]:
        table.add_column(name, justify=justify, no_wrap=name == "id")  # type: ignore[arg-type]
    for a in accounts:
        state = str(a.get("state", _DASH))
        last_class, last_message = a.get("last_error_class"), a.get("last_error_message")
        last = str(last_class) if last_class else _DASH
        if last_class and last_message:
            last = f"{last_class}: {last_message}"
        table.add_row(
            _cell(a.get("id")),
            _cell(a.get("proxy_name") or a.get("proxy_key")),
            Text(state, style=_STATE_STYLE.get(state, "")),
            Text(format_duration(a.get("cooldown_remaining_s")), style="yellow"),
            Text(_classes_summary(a.get("rate_classes"))),
            _cell(a.get("disabled_reason")),
            Text(f"{a.get('calls_ok', _DASH)}/{a.get('calls_failed', _DASH)}"),
            Text(last),
        )
    return table


def _budget_text(left: object) -> str:
    if not isinstance(left, Mapping) or not left:
        return _DASH
    return ", ".join(f"{n} {w.removeprefix('per_')}" for w, n in left.items())


def _classes_summary(classes: object) -> str:
    """``resolve: cooling 23h 59m; join: 3 hour`` — per class cooling down or budgeted."""
    if not isinstance(classes, list) or not classes:
        return _DASH
    parts = []
    for c in classes:
        if not isinstance(c, Mapping):
            continue
        bits = []
        if c.get("cooldown_remaining_s"):
            bits.append(f"cooling {format_duration(c.get('cooldown_remaining_s'))}")
        if c.get("budget_left"):
            bits.append(f"left {_budget_text(c.get('budget_left'))}")
        parts.append(f"{c.get('rate_class', _DASH)}: {' '.join(bits) or 'ok'}")
    return "; ".join(parts) or _DASH


def render_cooldowns(reply: Mapping[str, Any]) -> RenderableType:
    """The ``accounts.cooldowns`` reply (``AccountCooldowns``) as a table per rate class."""
    table = Table(
        title=f"Cooldowns of {reply.get('id', _DASH)} (account-wide:"
        f" {format_duration(reply.get('cooldown_remaining_s'))})",
        title_justify="left",
    )
    for name in ("rate class", "cooldown", "cause", "budget left", "budget frees in"):
        table.add_column(name)
    for c in reply.get("rate_classes") or []:
        if not isinstance(c, Mapping):
            continue
        table.add_row(
            _cell(c.get("rate_class")),
            Text(format_duration(c.get("cooldown_remaining_s")), style="yellow"),
            _cell(c.get("cause")),
            Text(_budget_text(c.get("budget_left"))),
            Text(format_duration(c.get("budget_frees_in_s"))),
        )
    return table


def _totals(stats: Mapping[str, Any]) -> Text:
    g = stats.get
    parts = [
        f"uptime {format_duration(g('uptime_s'))}",
        f"jobs in flight {g('jobs_in_flight', _DASH)}, ok {g('jobs_ok', _DASH)},"
        f" failed {g('jobs_failed', _DASH)}",
        f"accounts {g('accounts_total', _DASH)}: ready {g('accounts_ready', _DASH)},"
        f" cooling {g('accounts_cooling', _DASH)}, disabled {g('accounts_disabled', _DASH)}",
        f"config #{g('config_generation', _DASH)} loaded {g('config_loaded_at', _DASH)}",
    ]
    orphans = g("orphaned_accounts") or ()
    if orphans:
        parts.append(f"orphaned in state store: {', '.join(map(str, orphans))}")
    return Text(" · ".join(parts))


def render_status(stats: Mapping[str, Any]) -> RenderableType:
    """Build the ``mtpoold status`` view.

    Args:
        stats: The ``status`` reply (unstructured ``PoolStatistics``).

    Returns:
        A renderable: the proxies table, the accounts table, and a totals line with uptime.
    """
    proxies = [p for p in stats.get("proxies") or () if isinstance(p, Mapping)]
    accounts = [a for a in stats.get("accounts") or () if isinstance(a, Mapping)]
    return Group(_proxies_table(proxies), _accounts_table(accounts), _totals(stats))


def render_accounts(stats: Mapping[str, Any]) -> RenderableType:
    """Build the ``mtpoold accounts list`` view: the accounts table, then the accounts only
    the state store still knows (orphans) with how to forget them.

    Args:
        stats: The ``status`` reply (unstructured ``PoolStatistics``).
    """
    accounts = [a for a in stats.get("accounts") or () if isinstance(a, Mapping)]
    parts: list[RenderableType] = [_accounts_table(accounts)]
    orphans = [str(o) for o in stats.get("orphaned_accounts") or ()]
    if orphans:
        parts.append(
            Text(
                f"orphaned in the state store (not in the config): {', '.join(orphans)}"
                " — `mtpoold accounts forget ID` deletes one"
            )
        )
    return Group(*parts)


def render_proxies(stats: Mapping[str, Any]) -> RenderableType:
    """Build the ``mtpoold proxies list`` view: the proxies table.

    Args:
        stats: The ``status`` reply (unstructured ``PoolStatistics``).
    """
    return _proxies_table([p for p in stats.get("proxies") or () if isinstance(p, Mapping)])
