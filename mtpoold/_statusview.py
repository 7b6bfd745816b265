"""Rich views for ``mtpoold status``, ``accounts list``, ``proxies list``, ``accounts
cooldowns`` and ``jobs``, drawn from the daemon's replies.

Input is the JSON shape of ``cattrs.unstructure(pool.statistics())`` (``PoolStatistics`` in
``docs/CONTRACTS.md``), of ``Pool.cooldowns`` and of ``Pool.jobs``. Missing keys show as ``-``
rather than failing, so a CLI and a daemon of slightly different versions still talk. Every
cell is plain `rich.text.Text`: account names, reasons and error messages are never read as
markup.

The default ``status`` view is made for a fleet of thousands on an 80-column terminal: a
summary first (jobs; accounts by `AccountState`, adding up to the total), every proxy lane
(one no account uses too), then only the accounts that need attention (`needs_attention`),
at most ``limit`` of them. Every cell is one line (``no_wrap``, cut with an ellipsis), so
a table never gets wider than the console; ``wide=True`` lists every account with every
column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from ._stats import AccountState

__all__ = [
    "ATTENTION_LIMIT",
    "SORT_KEYS",
    "AccountFilter",
    "format_duration",
    "format_short",
    "held_back",
    "needs_attention",
    "render_accounts",
    "render_cluster",
    "render_cooldowns",
    "render_jobs",
    "render_proxies",
    "render_status",
    "state_counts",
]

_DASH = "-"
#: Accounts the default ``status`` view lists at most (the rest: "... and N more").
ATTENTION_LIMIT: Final = 20
#: Longest last-error message shown in the narrow view, characters (the cell is cut too).
_ERROR_CHARS: Final = 40

#: The states in the order the summary counts them (`AccountState`).
_STATE_ORDER: Final = tuple(AccountState)


def format_duration(seconds: object) -> str:
    """``3725`` -> ``"1h 02m 05s"``; ``12.5`` -> ``"12.5s"``; ``0``/None -> ``"-"``.

    Args:
        seconds: A duration in seconds (anything else shows as ``"-"``).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        return _DASH
    if not math.isfinite(seconds):
        return "forever"
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


def format_short(seconds: object) -> str:
    """A duration in at most two units, no spaces: ``42`` -> ``"42s"``, ``303`` ->
    ``"5m03s"``, ``86340`` -> ``"23h59m"``, ``183600`` -> ``"2d03h"``; 0/None -> ``"-"``.

    Args:
        seconds: A duration in seconds; under 10 s it keeps one decimal (``"2.5s"``).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        return _DASH
    if not math.isfinite(seconds):
        return "forever"
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = int(math.ceil(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _visible(text: str) -> str:
    """``text`` safe to print on a terminal: line breaks and tabs as spaces, every other
    unprintable character (ESC of an ANSI sequence, bidi overrides) as ``\\xNN`` /
    ``\\uNNNN``. A disable reason or an error message comes from outside (any token
    holder, Telegram): printed raw, it could recolour, move the cursor, retitle the terminal."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif c in "\n\r\t":
            out.append(" ")
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    return "".join(out)


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _cell(value: object) -> Text:
    if value is None or value == "":
        return Text(_DASH)
    if isinstance(value, float):
        return Text(f"{value:g}")
    return Text(str(value))


def _errors(by_class: object, *, top: int | None = None) -> str:
    """``FLOOD_WAIT 2, STREAM_CLOSED 1``; with ``top``: the largest ``top`` then ``+N``."""
    if not isinstance(by_class, Mapping) or not by_class:
        return _DASH
    items = sorted(by_class.items(), key=lambda kv: (-_num(kv[1]), str(kv[0])))
    if top is None:
        return ", ".join(f"{name} {count}" for name, count in sorted(by_class.items()))
    shown = ", ".join(f"{name} {count}" for name, count in items[:top])
    return shown + (f" +{len(items) - top}" if len(items) > top else "")


_STATE_STYLE: dict[str, str] = {
    AccountState.READY: "green",
    AccountState.BUSY: "cyan",
    AccountState.IDLE: "",
    AccountState.CONNECTING: "yellow",
    AccountState.COOLDOWN: "yellow",
    AccountState.DISABLED: "red",
    AccountState.RETIRED: "dim",
    AccountState.REMOTE: "dim",
}


class _Grid:
    """A table of one-line cells that fits the console's width: every column as wide as its
    widest cell (header included), and when that is too wide the flexible columns give up
    width down to their header (at least 6 characters) — those of the highest ``flex`` first,
    among equals the widest first; what no longer fits a cell is cut with an ellipsis.
    Headers are never cut, nothing wraps. A row may carry a note: one line of its own right
    below the row, indented under the second column, cut with an ellipsis at the console's
    width (the ``jobs`` view's "what it waits for", so that no column gives up width to it).
    """

    _GAP: Final = 1  # characters between two columns (the box's blank separator, no padding)
    _FLEX_MIN: Final = 6
    _NOTE_MARK: Final = "└ "

    def __init__(self, title: str | None) -> None:
        self.title = title
        self._columns: list[tuple[str, bool, int]] = []  # header, right, flex (0: fixed)
        self._rows: list[list[Text]] = []
        self._notes: list[Text | None] = []

    def add_column(self, header: str, *, right: bool = False, flex: int = 0) -> None:
        self._columns.append((header, right, flex))

    def add_row(self, *cells: Text, note: Text | None = None) -> None:
        self._rows.append([Text(_visible(c.plain), style=c.style) for c in cells])
        self._notes.append(None if note is None else Text(_visible(note.plain), style=note.style))

    @property
    def row_count(self) -> int:
        return len(self._rows)

    def widths(self, max_width: int) -> list[int]:
        """Each column's width for a console ``max_width`` characters wide."""
        widths = [
            max([len(h)] + [r[i].cell_len for r in self._rows if i < len(r)])
            for i, (h, _, _) in enumerate(self._columns)
        ]
        floors = [
            max(len(h), self._FLEX_MIN) if flex else widths[i]
            for i, (h, _, flex) in enumerate(self._columns)
        ]
        excess = sum(widths) + self._GAP * (len(widths) - 1) - max_width
        while excess > 0:
            room = [
                (self._columns[i][2], widths[i] - floors[i], i)
                for i in range(len(widths))
                if widths[i] > floors[i]
            ]
            if not room:
                break  # only fixed columns left: rich cuts them as a last resort
            i = max(room)[2]
            widths[i] -= 1
            excess -= 1
        return widths

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(
            title=self.title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            padding=0,
            pad_edge=False,
            show_edge=False,
            expand=False,
        )
        widths = self.widths(options.max_width)
        for (header, right, _), width in zip(self._columns, widths, strict=True):
            table.add_column(
                header,
                justify="right" if right else "left",
                no_wrap=True,
                overflow="ellipsis",
                width=width,
            )
        for row in self._rows:
            table.add_row(*row)
        if not any(n is not None for n in self._notes):
            yield table
            return
        # Each row is one line (one-line cells, no wrap): the last len(rows) lines.
        lines = console.render_lines(table, options.update(height=None), pad=False)
        head = len(lines) - len(self._rows)
        indent = " " * (widths[0] + self._GAP if len(widths) > 1 else 0)
        for line in lines[:head]:
            yield from line
            yield Segment.line()
        for line, note in zip(lines[head:], self._notes, strict=True):
            yield from line
            yield Segment.line()
            if note is not None:
                text = Text(indent + self._NOTE_MARK) + note
                text.truncate(options.max_width, overflow="ellipsis")
                yield text


def _table(title: str | None) -> _Grid:
    return _Grid(title)


def _column(table: _Grid, header: str, *, right: bool = False, ratio: int = 0) -> None:
    table.add_column(header, right=right, flex=ratio)


# --- the pieces of an account's row -------------------------------------------------------------


def _lanes_by_key(stats: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(p.get("key")): p for p in stats.get("proxies") or () if isinstance(p, Mapping)}


def _class_cooling(classes: object) -> list[tuple[float, str, str]]:
    """(seconds left, class, cause code) of every rate class cooling down or budget-held."""
    out: list[tuple[float, str, str]] = []
    if not isinstance(classes, list):
        return out
    for c in classes:
        if not isinstance(c, Mapping):
            continue
        name = str(c.get("rate_class", _DASH))
        cooling = _num(c.get("cooldown_remaining_s"))
        frees = _num(c.get("budget_frees_in_s"))
        if cooling > 0:
            out.append((cooling, name, _code(c.get("cause")) or "cooldown"))
        elif frees > 0:
            out.append((frees, name, "budget"))
    out.sort(key=lambda t: -t[0])
    return out


def _code(cause: object) -> str | None:
    """The error code of a cause: ``"FLOOD_WAIT: FLOOD_WAIT_37 (420)"`` -> ``FLOOD_WAIT``."""
    if not isinstance(cause, str) or not cause:
        return None
    return cause.split(":", 1)[0].strip() or None


def held_back(account: Mapping[str, Any], lanes: Mapping[str, Mapping[str, Any]]) -> str:
    """One compact cell saying what holds the account back and for how long, or ``"-"``.

    In cluster mode first why this node may not use it (``"held by node b"``, ``"unheld:
    PHP lock held"``). The account's own cooldown with its cause (``"cooling 12s
    (FLOOD_WAIT)"``), else its proxy's (``"proxy p1 cooling 42s"``; the cause is in the
    proxies table), then its longest rate-class block (``"resolve 23h59m (FLOOD_WAIT)"``,
    ``"join 5m03s (budget)"``) with ``"+N more"``. Durations from `format_short`.

    Args:
        account: One ``AccountStatistics`` as JSON.
        lanes: The ``proxies`` of the same reply by key (the proxy cooldown is the lane's).
    """
    parts: list[str] = []
    remote = account.get("remote_reason")
    if remote:  # cluster mode: not this node's to use now, and why
        parts.append(" ".join(str(remote).split()))
    own = _num(account.get("cooldown_remaining_s"))
    lane = lanes.get(str(account.get("proxy_key")))
    proxy_s = _num(lane.get("cooldown_remaining_s")) if lane is not None else 0.0
    if own > 0:
        code = _code(account.get("cooldown_cause"))
        parts.append(f"cooling {format_short(own)}" + (f" ({code})" if code else ""))
    elif proxy_s > 0:
        name = account.get("proxy_name") or account.get("proxy_key")
        parts.append(f"proxy {name} cooling {format_short(proxy_s)}")
    classes = _class_cooling(account.get("rate_classes"))
    if classes:
        seconds, name, code = classes[0]
        parts.append(f"{name} {format_short(seconds)} ({code})")
        if len(classes) > 1:
            parts[-1] += f" +{len(classes) - 1} more"
    return ", ".join(parts) if parts else _DASH


def _last_error(account: Mapping[str, Any], *, chars: int | None) -> str:
    """``CLASS: message`` on one line, the message cut to ``chars`` (None: whole)."""
    last_class, message = account.get("last_error_class"), account.get("last_error_message")
    if not last_class:
        return _DASH
    if not message:
        return str(last_class)
    text = " ".join(str(message).split())  # one line, whatever the message held
    if chars is not None and len(text) > chars:
        text = text[: chars - 1] + "…"
    return f"{last_class}: {text}"


def _proxy_cooling_s(account: Mapping[str, Any], lanes: Mapping[str, Mapping[str, Any]]) -> float:
    lane = lanes.get(str(account.get("proxy_key")))
    return _num(lane.get("cooldown_remaining_s")) if lane is not None else 0.0


def _held_s(account: Mapping[str, Any], lanes: Mapping[str, Mapping[str, Any]]) -> float:
    """The longest of its own, its proxy's and its rate classes' cooldowns, seconds."""
    classes = _class_cooling(account.get("rate_classes"))
    return max(
        _num(account.get("cooldown_remaining_s")),
        _proxy_cooling_s(account, lanes),
        classes[0][0] if classes else 0.0,
    )


def needs_attention(account: Mapping[str, Any], lanes: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the default ``status`` view lists the account: it is cooling down, disabled
    or retired (its state); its proxy or one of its rate classes holds it back; or it is
    failing (more failed calls than calls that returned a result).

    Args:
        account: One ``AccountStatistics`` as JSON.
        lanes: The ``proxies`` of the same reply by key.
    """
    state = account.get("state")
    if state in (AccountState.COOLDOWN, AccountState.DISABLED, AccountState.RETIRED):
        return True
    if _held_s(account, lanes) > 0:
        return True
    return _num(account.get("calls_failed")) > _num(account.get("calls_ok"))


_SEVERITY: Final[dict[str, int]] = {
    AccountState.DISABLED: 0,
    AccountState.RETIRED: 1,
    AccountState.COOLDOWN: 2,
    AccountState.CONNECTING: 3,
    AccountState.BUSY: 4,
    AccountState.READY: 5,
    AccountState.IDLE: 6,
}

#: ``--sort`` keys: how each orders the accounts (ties by id).
SORT_KEYS: Final = ("state", "id", "proxy", "cooldown", "failures", "last-used")


def _sorter(
    key: str, lanes: Mapping[str, Mapping[str, Any]]
) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    def ident(a: Mapping[str, Any]) -> str:
        return str(a.get("id", ""))

    if key == "id":
        return lambda a: (ident(a),)
    if key == "proxy":
        return lambda a: (str(a.get("proxy_name") or a.get("proxy_key") or ""), ident(a))
    if key == "cooldown":  # the longest held back first
        return lambda a: (-_held_s(a, lanes), ident(a))
    if key == "failures":
        return lambda a: (-_num(a.get("calls_failed")), ident(a))
    if key == "last-used":  # the most recently used first, never used last

        def last_used(a: Mapping[str, Any]) -> tuple[Any, ...]:
            ago = a.get("last_used_s_ago")
            return (ago is None, _num(ago), ident(a))

        return last_used
    # "state": the worst first (disabled, retired, cooling...), the longest held back first
    return lambda a: (_SEVERITY.get(str(a.get("state")), 9), -_held_s(a, lanes), ident(a))


class AccountFilter:
    """Which accounts a view lists: ``--state`` (any of), ``--proxy`` (name or key),
    ``--tag`` (all of). No criterion: the view decides (attention, or everything).

    Args:
        states: State names (`AccountState` values) an account may be in.
        proxies: Proxy names or keys an account may call through.
        tags: Tags an account must all carry.
    """

    def __init__(
        self,
        states: Iterable[str] = (),
        proxies: Iterable[str] = (),
        tags: Iterable[str] = (),
    ) -> None:
        self.states = frozenset(states)
        self.proxies = frozenset(proxies)
        self.tags = frozenset(tags)

    def __bool__(self) -> bool:
        return bool(self.states or self.proxies or self.tags)

    def accepts(self, account: Mapping[str, Any]) -> bool:
        """Whether ``account`` (``AccountStatistics`` as JSON) passes every criterion."""
        if self.states and str(account.get("state")) not in self.states:
            return False
        if self.proxies and not (
            str(account.get("proxy_name")) in self.proxies
            or str(account.get("proxy_key")) in self.proxies
        ):
            return False
        tags = account.get("tags") or ()
        return not self.tags or self.tags <= set(map(str, tags))

    def accepts_proxy(self, proxy: Mapping[str, Any]) -> bool:
        """Whether a lane (``LaneStatistics`` as JSON) is shown (only ``--proxy`` filters)."""
        return not self.proxies or bool(
            {str(proxy.get("name")), str(proxy.get("key"))} & self.proxies
        )


# --- tables -------------------------------------------------------------------------------------


def _proxies_table(
    proxies: Sequence[Mapping[str, Any]],
    accounts_per_lane: Mapping[str, int] | None,
    *,
    wide: bool,
    title: str | None = "Proxies",
) -> _Grid:
    table = _table(title)
    if wide:
        _column(table, "key", ratio=1)
    _column(table, "proxy", ratio=1)
    _column(table, "type")
    if accounts_per_lane is not None:
        _column(table, "accts", right=True)
    _column(table, "load", right=True)
    _column(table, "queue", right=True)
    _column(table, "next", right=True)
    _column(table, "calls", right=True)
    _column(table, "errors", ratio=2)
    _column(table, "cooldown", right=True)
    for p in proxies:
        next_slot = p.get("next_slot_in_s")
        row = []
        if wide:
            row.append(_cell(p.get("key")))
        row += [_cell(p.get("name") or p.get("key")), _cell(p.get("type"))]
        if accounts_per_lane is not None:
            row.append(Text(str(accounts_per_lane.get(str(p.get("key")), 0))))
        cooldown = _num(p.get("cooldown_remaining_s"))
        cause = _code(p.get("cooldown_cause")) if cooldown > 0 else None
        row += [
            Text(f"{p.get('in_flight', _DASH)}/{p.get('capacity', _DASH)}"),
            _cell(p.get("waiting")),
            Text(f"{next_slot:.1f}s" if isinstance(next_slot, int | float) else _DASH),
            _cell(p.get("calls")),
            Text(_errors(p.get("errors_by_class"), top=None if wide else 1)),
            Text(
                format_short(cooldown) + (f" ({cause})" if cause else ""),
                style="yellow" if cooldown > 0 else "",
            ),
        ]
        table.add_row(*row)
    return table


def _accounts_table(
    accounts: Sequence[Mapping[str, Any]],
    lanes: Mapping[str, Mapping[str, Any]],
    *,
    wide: bool,
    title: str | None,
) -> _Grid:
    table = _table(title)
    _column(table, "id", ratio=1)
    _column(table, "proxy", ratio=2)
    _column(table, "state")
    if wide:
        _column(table, "tags")
    _column(table, "held back", ratio=1)
    if wide:
        _column(table, "ok", right=True)
    _column(table, "failed", right=True)
    if wide:
        _column(table, "caller", right=True)
        _column(table, "used", right=True)
        _column(table, "disabled reason", ratio=2)
    _column(table, "last error", ratio=2)
    for a in accounts:
        state = str(a.get("state", _DASH))
        row = [
            _cell(a.get("id")),
            _cell(a.get("proxy_name") or a.get("proxy_key")),
            Text(state, style=_STATE_STYLE.get(state, "")),
        ]
        if wide:
            row.append(Text(",".join(map(str, a.get("tags") or ())) or _DASH))
        row.append(Text(held_back(a, lanes), style="yellow"))
        if wide:
            row.append(_cell(a.get("calls_ok")))
        row.append(_cell(a.get("calls_failed")))
        if wide:
            row.append(_cell(a.get("caller_errors")))
            ago = a.get("last_used_s_ago")
            row += [
                Text(f"{format_short(ago)} ago" if _num(ago) > 0 else _DASH),
                _cell(a.get("disabled_reason")),
            ]
        elif state == AccountState.DISABLED and a.get("disabled_reason"):
            # the narrow view has no reason column: the reason is what matters here
            row.append(Text(f"disabled: {' '.join(str(a['disabled_reason']).split())}"))
            table.add_row(*row)
            continue
        row.append(Text(_last_error(a, chars=None if wide else _ERROR_CHARS)))
        table.add_row(*row)
    return table


def state_counts(stats: Mapping[str, Any]) -> dict[str, int]:
    """Accounts by `AccountState` value, adding up to ``accounts_total``: the reply's
    ``accounts_by_state`` if present, else counted from its ``accounts``."""
    given = stats.get("accounts_by_state")
    if isinstance(given, Mapping) and given:
        return {str(k): int(_num(v)) for k, v in given.items()}
    counts: dict[str, int] = {}
    for a in stats.get("accounts") or ():
        if isinstance(a, Mapping):
            state = str(a.get("state", _DASH))
            counts[state] = counts.get(state, 0) + 1
    return counts


def _summary(stats: Mapping[str, Any]) -> Text:
    g = stats.get
    accounts = [a for a in g("accounts") or () if isinstance(a, Mapping)]
    counts = state_counts(stats)
    order = [s.value for s in _STATE_ORDER] + sorted(set(counts) - set(_STATE_ORDER))
    by_state = ", ".join(f"{s} {counts[s]}" for s in order if counts.get(s))
    text = Text()
    text.append(
        f"mtpoold up {format_short(g('uptime_s'))} · config #{g('config_generation', _DASH)}"
        f" loaded {g('config_loaded_at', _DASH)}\n"
    )
    text.append(
        f"jobs: {g('jobs_in_flight', _DASH)} in flight, {g('jobs_ok', _DASH)} ok,"
        f" {g('jobs_failed', _DASH)} failed\n"
    )
    text.append(f"accounts {g('accounts_total', _DASH)}: {by_state or 'none'}")
    proxies = [p for p in g("proxies") or () if isinstance(p, Mapping)]
    cooling = sum(1 for p in proxies if _num(p.get("cooldown_remaining_s")) > 0)
    # the direct lane is a lane, not a proxy: count it apart, as check-config and the log do
    direct = sum(1 for p in proxies if p.get("type") == "direct")
    plus = " + direct" if direct else ""
    text.append(f"\nproxies {len(proxies) - direct}{plus}: {cooling} cooling")
    caller = sum(int(_num(a.get("caller_errors"))) for a in accounts)
    if caller:
        text.append(f"\ncaller errors {caller} (PEER_NOT_FOUND, INVALID_ARGUMENT; not failures)")
    orphans = g("orphaned_accounts") or ()
    if orphans:
        text.append(f"\norphaned in the state store: {len(orphans)} (mtpoold accounts list)")
    return text


def render_status(
    stats: Mapping[str, Any],
    *,
    wide: bool = False,
    only: AccountFilter | None = None,
    sort: str = "state",
    limit: int = ATTENTION_LIMIT,
) -> RenderableType:
    """Build the ``mtpoold status`` view.

    Args:
        stats: The ``status`` reply (unstructured ``PoolStatistics``).
        wide: Every account and every column (``--wide``); else the accounts that need
            attention (`needs_attention`), or those ``only`` accepts, at most ``limit``.
        only: ``--state`` / ``--proxy`` / ``--tag`` filters (the proxies table follows
            ``--proxy``).
        sort: One of `SORT_KEYS`.
        limit: Accounts listed at most when not ``wide``; the rest are counted ("... and N
            more (--wide / --state)").

    Returns:
        A renderable: the summary, the proxies table, the accounts table.
    """
    only = only or AccountFilter()
    lanes = _lanes_by_key(stats)
    accounts = [a for a in stats.get("accounts") or () if isinstance(a, Mapping)]
    per_lane: dict[str, int] = {}
    for a in accounts:
        key = str(a.get("proxy_key"))
        per_lane[key] = per_lane.get(key, 0) + 1
    proxies = [p for p in lanes.values() if only.accepts_proxy(p)]
    parts: list[RenderableType] = [_summary(stats), Text("")]
    parts.append(_proxies_table(proxies, per_lane if accounts else None, wide=wide))
    if only:
        shown = [a for a in accounts if only.accepts(a)]
        title = f"Accounts matching ({len(shown)} of {len(accounts)})"
    elif wide:
        shown, title = accounts, f"Accounts ({len(accounts)})"
    else:
        shown = [a for a in accounts if needs_attention(a, lanes)]
        title = f"Accounts needing attention ({len(shown)} of {len(accounts)})"
    shown.sort(key=_sorter(sort, lanes))
    rest = 0
    if not wide and len(shown) > limit:
        shown, rest = shown[:limit], len(shown) - limit
    if not accounts:  # a summary-only reply (``{"summary": true}``)
        pass
    elif not shown:
        parts.append(Text(f"{title}: none" + ("" if only else " (--wide lists every account)")))
    else:
        parts.append(_accounts_table(shown, lanes, wide=wide, title=title))
    if rest:
        parts.append(Text(f"… and {rest} more (--wide / --state)"))
    cluster = stats.get("cluster")
    if isinstance(cluster, Mapping):
        parts += [Text(""), render_cluster(cluster, wide=wide, limit=limit)]
    return Group(*parts)


# --- the cluster (``status`` in cluster mode: the reply's ``cluster`` member) -------------------


def _cluster_summary(cluster: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> Text:
    holders = cluster.get("holders")
    holders = holders if isinstance(holders, Mapping) else {}
    total = cluster.get("accounts_total", len(holders))
    unheld = cluster.get("unheld", sum(1 for v in holders.values() if v is None))
    age = cluster.get("age_s")
    text = Text(
        f"cluster: this node {cluster.get('node', _DASH)} · {len(nodes)} live"
        f" node{'s' if len(nodes) != 1 else ''} · accounts {total}, unheld {unheld}"
        f" · read {f'{format_short(age)} ago' if _num(age) > 0 else 'just now'}"
        if age is not None
        else f"cluster: this node {cluster.get('node', _DASH)} · nodes not read yet"
    )
    failover = cluster.get("failover_s")
    if isinstance(failover, int | float):
        text.append(f"\nfailover: a dead node's accounts move within {format_short(failover)}")
    error = cluster.get("error")
    if error:
        text.append(f"\ncluster unreadable, showing the last read: {error}", style="red")
    trouble = cluster.get("trouble")
    if trouble and trouble != error:
        text.append(f"\nthis node: {trouble}", style="red")
    forwarded = cluster.get("forwarded")
    if isinstance(forwarded, Mapping) and forwarded:
        text.append("\nforwarded from here: " + _errors(forwarded))
    return text


def _nodes_table(
    nodes: Sequence[Mapping[str, Any]], here: object, per_node: Mapping[str, list[str]] | None
) -> _Grid:
    table = _table("Nodes")
    _column(table, "node", ratio=1)
    _column(table, "rpc", ratio=2)
    _column(table, "held", right=True)
    _column(table, "jobs", right=True)
    _column(table, "ok", right=True)
    _column(table, "failed", right=True)
    _column(table, "lanes", right=True)
    if per_node is not None:
        _column(table, "accounts", ratio=3)
    for n in nodes:
        name = str(n.get("name", _DASH))
        lanes = len(n.get("lanes") or ()) + int(_num(n.get("lanes_more")))
        row = [
            Text(name + (" *" if name == here else ""), style="bold" if name == here else ""),
            _cell(n.get("rpc")),
            _cell(n.get("held")),
            _cell(n.get("jobs_in_flight")),
            _cell(n.get("jobs_ok")),
            _cell(n.get("jobs_failed")),
            Text(str(lanes)),
        ]
        if per_node is not None:
            row.append(Text(", ".join(per_node.get(name, ())) or _DASH))
        table.add_row(*row)
    return table


def _cluster_lanes_table(
    nodes: Sequence[Mapping[str, Any]], *, wide: bool, limit: int
) -> tuple[_Grid, int]:
    rows: list[tuple[str, Mapping[str, Any]]] = [
        (str(n.get("name", _DASH)), p)
        for n in nodes
        for p in n.get("lanes") or ()
        if isinstance(p, Mapping)
    ]
    # a summary may leave out a lane's type and capacity: then so does the table
    typed = any(p.get("type") is not None for _, p in rows)
    sized = any(p.get("capacity") is not None for _, p in rows)
    table = _table("Lanes by node")
    _column(table, "node", ratio=1)
    _column(table, "proxy", ratio=2)
    if typed:
        _column(table, "type")
    _column(table, "load" if sized else "in flight", right=True)
    _column(table, "queue", right=True)
    _column(table, "calls", right=True)
    _column(table, "cooldown", right=True)
    rest = 0
    if not wide and len(rows) > limit:
        # the busiest first: what is in flight or queued, then what cools
        rows.sort(
            key=lambda r: (
                -_num(r[1].get("in_flight")) - _num(r[1].get("waiting")),
                -_num(r[1].get("cooldown_remaining_s")),
            )
        )
        rows, rest = rows[:limit], len(rows) - limit
        rows.sort(key=lambda r: r[0])
    for name, p in rows:
        cooldown = _num(p.get("cooldown_remaining_s"))
        row = [_cell(name), _cell(p.get("name") or p.get("key"))]
        if typed:
            row.append(_cell(p.get("type")))
        in_flight = p.get("in_flight", _DASH)
        row += [
            Text(f"{in_flight}/{p.get('capacity', _DASH)}" if sized else str(in_flight)),
            _cell(p.get("waiting")),
            _cell(p.get("calls")),
            Text(format_short(cooldown), style="yellow" if cooldown > 0 else ""),
        ]
        table.add_row(*row)
    rest += sum(int(_num(n.get("lanes_more"))) for n in nodes)
    return table, rest


def render_cluster(
    cluster: Mapping[str, Any], *, wide: bool = False, limit: int = ATTENTION_LIMIT
) -> RenderableType:
    """Build the cluster part of ``mtpoold status``: every live node (its ``rpc`` address,
    accounts held, jobs, lanes), who holds which account, each node's lanes.

    Args:
        cluster: The ``status`` reply's ``cluster`` member (`mtpoold._forward.Doors
            .cluster_status`: ``node``, ``age_s``, ``error``, ``failover_s``, ``nodes``,
            ``holders``, ``forwarded``).
        wide: Every lane, and every account with its node in a table of its own; else at
            most ``limit`` lanes (the busiest) and each node's accounts on its row.
        limit: Lanes listed at most when not ``wide``.

    Returns:
        A renderable: the summary, the nodes table, the lanes table, the accounts held by
        no live node (and with ``wide`` every account's holder).
    """
    nodes = [n for n in cluster.get("nodes") or () if isinstance(n, Mapping)]
    holders = cluster.get("holders")
    holders = holders if isinstance(holders, Mapping) else {}
    per_node: dict[str, list[str]] = {}
    unheld: list[str] = []
    for account in sorted(holders, key=str):
        holder = holders[account]
        if holder is None:
            unheld.append(str(account))
        else:
            per_node.setdefault(str(holder), []).append(str(account))
    parts: list[RenderableType] = [_cluster_summary(cluster, nodes), Text("")]
    on_rows = None if wide or not holders else per_node  # a summary reply has no holders
    parts.append(_nodes_table(nodes, cluster.get("node"), on_rows))
    lanes, rest = _cluster_lanes_table(nodes, wide=wide, limit=limit)
    if lanes.row_count:
        parts.append(lanes)
    if rest:
        parts.append(Text(f"… and {rest} more lanes (--wide)"))
    if wide and holders:
        parts.append(Text(f"Accounts by holder ({len(holders)})"))
        table = _table(None)
        _column(table, "account", ratio=1)
        _column(table, "node", ratio=1)
        for account in sorted(holders, key=str):
            holder = holders[account]
            table.add_row(
                _cell(account),
                Text("unheld", style="yellow") if holder is None else _cell(holder),
            )
        parts.append(table)
    elif unheld:
        shown = ", ".join(unheld[:limit]) + (
            f" … +{len(unheld) - limit}" if len(unheld) > limit else ""
        )
        parts.append(Text(f"held by no live node ({len(unheld)}): {shown}", style="yellow"))
    return Group(*parts)


def render_accounts(stats: Mapping[str, Any]) -> RenderableType:
    """Build the ``mtpoold accounts list`` view: every account with every column, then the
    accounts only the state store still knows (orphans) with how to forget them.

    Args:
        stats: The ``status`` reply (unstructured ``PoolStatistics``).
    """
    accounts = [a for a in stats.get("accounts") or () if isinstance(a, Mapping)]
    lanes = _lanes_by_key(stats)
    accounts.sort(key=_sorter("id", lanes))
    parts: list[RenderableType] = [
        _accounts_table(accounts, lanes, wide=True, title=f"Accounts ({len(accounts)})")
    ]
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
    """Build the ``mtpoold proxies list`` view: every lane with every column.

    Args:
        stats: The ``status`` reply (unstructured ``PoolStatistics``).
    """
    proxies = [p for p in stats.get("proxies") or () if isinstance(p, Mapping)]
    per_lane: dict[str, int] = {}
    for a in stats.get("accounts") or ():
        if isinstance(a, Mapping):
            key = str(a.get("proxy_key"))
            per_lane[key] = per_lane.get(key, 0) + 1
    return _proxies_table(proxies, per_lane, wide=True)


def _budget_text(left: object) -> str:
    if not isinstance(left, Mapping) or not left:
        return _DASH
    return ", ".join(f"{n}/{str(w).removeprefix('per_')}" for w, n in left.items())


def render_cooldowns(reply: Mapping[str, Any]) -> RenderableType:
    """The ``accounts.cooldowns`` reply (``AccountCooldowns``) as a table per rate class:
    cooldown left, its cause (one line), budget left per window, when a spent one frees."""
    table = _table(
        f"Cooldowns of {reply.get('id', _DASH)} (account-wide:"
        f" {format_short(reply.get('cooldown_remaining_s'))})"
    )
    _column(table, "rate class")
    _column(table, "cooldown", right=True)
    _column(table, "cause", ratio=2)
    _column(table, "budget left")
    _column(table, "frees in", right=True)
    for c in reply.get("rate_classes") or []:
        if not isinstance(c, Mapping):
            continue
        cause = c.get("cause")
        table.add_row(
            _cell(c.get("rate_class")),
            Text(format_short(c.get("cooldown_remaining_s")), style="yellow"),
            Text(" ".join(str(cause).split()) if cause else _DASH),
            Text(_budget_text(c.get("budget_left"))),
            Text(format_short(c.get("budget_frees_in_s"))),
        )
    return table


# --- jobs -----------------------------------------------------------------------------------------


def _waits_for(job: Mapping[str, Any]) -> str:
    """The job's state and what it waits for, one line (from the ``jobs`` reply's
    ``state`` and ``waiting_for``): ``waiting_account #1: all 4 busy``, ``waiting_gate p1
    #2, 3900 ms``, ``in_call a1@p1 1200 ms``, ..."""
    state = str(job.get("state") or _DASH)
    w = job.get("waiting_for")
    if not isinstance(w, Mapping):
        return state
    where = f"{w.get('account', _DASH)}@{w.get('lane', _DASH)}"
    if state in ("waiting_account", "backoff"):
        text = f"{state} #{w.get('position', _DASH)}: {w.get('why') or _DASH}"
        until = w.get("until_s")
        return text + (f" ({format_short(until)})" if _num(until) > 0 else "")
    if state == "waiting_gate":
        return f"{state} {where} #{w.get('position', _DASH)}, {_num(w.get('slot_in_ms')):.0f} ms"
    if state == "waiting_lane_capacity":
        return f"{state} {where} ({w.get('in_flight', _DASH)}/{w.get('capacity', _DASH)})"
    if state in ("in_call", "connecting"):
        return f"{state} {where} {_num(w.get('elapsed_ms')):.0f} ms"
    return f"{state}: {w.get('why') or _DASH}"


def _origin(job: Mapping[str, Any]) -> str:
    """The JSON-RPC id of a websocket request (its connection is in ``--json``), ``-`` for a
    Python caller's job."""
    rpc_id = job.get("rpc_id")
    return _DASH if rpc_id is None else json.dumps(rpc_id)


def render_jobs(reply: Mapping[str, Any]) -> RenderableType:
    """Build the ``mtpoold jobs`` view from the ``jobs`` reply (``{"jobs": [JobStatistics
    ...]}``): two lines per job in flight, oldest first — its row (the method whole at 80
    columns), then its state and what it waits for below it; in cluster mode then the jobs
    forwarded to other nodes (``forwarded``: node, method, account, age).

    Args:
        reply: The ``jobs`` reply.
    """
    jobs = [j for j in reply.get("jobs") or () if isinstance(j, Mapping)]
    table = _table(f"Jobs in flight ({len(jobs)})")
    _column(table, "job", right=True)
    _column(table, "rpc id", ratio=2)
    _column(table, "method", ratio=1)  # the last to give up width
    _column(table, "class", ratio=2)
    _column(table, "age", right=True)
    _column(table, "left", right=True)
    for j in jobs:
        table.add_row(
            _cell(j.get("job")),
            Text(_origin(j)),
            Text(f"{j.get('method', _DASH)}{' (shared)' if j.get('shared') else ''}"),
            Text(",".join(map(str, j.get("rate_classes") or ())) or _DASH),
            Text(format_short(j.get("age_s"))),
            Text(format_short(j.get("deadline_left_s"))),
            note=Text(_waits_for(j)),
        )
    forwarded = [f for f in reply.get("forwarded") or () if isinstance(f, Mapping)]
    if not forwarded:
        return table
    peers = _table(None)
    _column(peers, "node", ratio=1)
    _column(peers, "method", ratio=1)
    _column(peers, "account", ratio=1)
    _column(peers, "age", right=True)
    for f in forwarded:
        peers.add_row(
            _cell(f.get("node")),
            _cell(f.get("method")),
            Text(str(f["account"]) if f.get("account") else "any"),
            Text(format_short(f.get("age_s"))),
        )
    title = Text(f"Forwarded to other nodes, waiting for their reply ({len(forwarded)})")
    return Group(table, Text(""), title, peers)
