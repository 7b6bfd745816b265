"""Rate classes (every spelling of a TL name), budgets with their warm-up ramp, the request
guard, the scoped FLOOD_WAIT verdicts, the store's per-class tables and their config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtpoold._budget import BudgetBook, RequestGuard, WarmUp
from mtpoold._config import ConfigError, PolicyConfig, parse_config
from mtpoold._errors import ErrorClass, Failure, RateClassBlocked
from mtpoold._policy import decide
from mtpoold._rateclass import DEFAULT_RATE_CLASSES, RateClasses, rate_class_of
from mtpoold._statusview import render_accounts, render_cooldowns
from mtpoold._store import StateStore


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("contacts.ResolveUsername", "resolve"),
        ("contacts.resolveUsername", "resolve"),
        ("contacts.ResolveUsernameRequest", "resolve"),
        ("ResolveUsernameRequest", "resolve"),  # Telethon's class name, no namespace
        ("channels.GetMessagesRequest", "read"),
        ("GetMessagesRequest", "read"),  # messages. and channels. agree
        ("channels.getFullChannel", "full_info"),
        ("messages.importChatInvite", "join"),
        ("messages.sendMessage", "send"),
        ("help.getConfig", "other"),
        ("PingDelayDisconnectRequest", None),  # the keepalive is never guarded
    ],
)
def test_rate_class_of_accepts_every_spelling(name: str, expected: str | None) -> None:
    assert rate_class_of(name) == expected


def test_config_tables_move_functions_and_change_windows() -> None:
    config = parse_config(
        {
            "rate_classes": {
                "resolve": {"per_hour": 10, "per_day": 0},
                "search": {"functions": ["contacts.search"], "per_minute": 5},
            }
        },
        base_dir=Path("."),
    )
    classes = RateClasses.from_overrides(config.rate_classes)
    assert classes.windows("resolve") == ((3600.0, 10),)
    assert classes.class_of("contacts.Search") == "search"
    assert classes.windows("search") == ((60.0, 5),)
    assert classes.windows("read") == ()
    assert DEFAULT_RATE_CLASSES["resolve"].windows == ((3600.0, 50), (86400.0, 200))


def test_config_problems_name_their_key_paths() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "rate_classes": {"x": {"per_day": -1, "typo": 1}, "y": 3},
                "economy": {"warmup_start": 1.5, "warmup_days": -1},
            },
            base_dir=Path("."),
        )
    assert info.value.problems == (
        "economy.warmup_days: expected a number >= 0, got -1",
        "economy.warmup_start: expected a number > 0 and <= 1, got 1.5",
        "rate_classes.x.typo: unknown key",
        "rate_classes.x.per_day: expected an integer >= 0 (0: no limit), got -1",
        "rate_classes.y: expected a table, got 3",
    )


def test_budget_windows_slide_and_say_when_they_free() -> None:
    classes = RateClasses.from_overrides([])
    book = BudgetBook(classes, WarmUp(0, 1))
    for t in range(50):
        assert book.free_at_unix("a", "resolve", 1000.0 + t) == 1000.0 + t
        book.spend("a", "resolve", 1000.0 + t)
    assert book.left("a", "resolve", 1050.0) == {3600.0: 0, 86400.0: 150}
    assert book.free_at_unix("a", "resolve", 1050.0) == 1000.0 + 3600  # the oldest ages out
    assert book.free_at_unix("a", "resolve", 4600.5) == 4600.5
    assert book.free_at_unix("b", "resolve", 1050.0) == 1050.0  # per account
    assert book.free_at_unix("a", "read", 1050.0) == 1050.0  # no budget on reads
    assert len(book.take_unsaved()) == 50 and book.take_unsaved() == []


def test_warm_up_scales_budgets_of_new_accounts() -> None:
    book = BudgetBook(RateClasses.from_overrides([]), WarmUp(days=2, start=0.5))
    book.first_seen["new"] = 0.0
    assert book.limits("new", "resolve", 0.0) == [(3600.0, 25), (86400.0, 100)]
    assert book.limits("new", "resolve", 86400.0) == [(3600.0, 37), (86400.0, 150)]
    assert book.limits("new", "resolve", 2 * 86400.0) == [(3600.0, 50), (86400.0, 200)]
    assert WarmUp(days=0, start=0.1).scale(0) == 1.0


def test_the_guard_refuses_a_cooling_class_and_a_spent_budget() -> None:
    classes = RateClasses.from_overrides([])
    book = BudgetBook(classes, WarmUp(0, 1))
    floods = {("a", "read"): 150.0}
    clock = [100.0]
    spent: list[str] = []
    guard = RequestGuard(
        "a",
        classes,
        lambda acc, cls: floods.get((acc, cls), float("-inf")),
        lambda: clock[0],
        lambda: 5000.0,
        book,
        spent.append,
    )
    with pytest.raises(RateClassBlocked) as info:
        guard.admit("channels.GetMessagesRequest")
    assert (info.value.rate_class, info.value.reason, info.value.retry_after_s) == (
        "read",
        "flood",
        50.0,
    )
    guard.admit("help.GetConfigRequest")  # other classes go on
    guard.admit("PingDelayDisconnectRequest")
    for _ in range(50):
        guard.admit("contacts.ResolveUsernameRequest")
    with pytest.raises(RateClassBlocked) as info:
        guard.admit("contacts.resolveUsername")
    assert info.value.reason == "budget" and info.value.retry_after_s == pytest.approx(3600)
    assert len(spent) == 50  # only requests with a budget are counted (and went out)


def _flood(name: str, seconds: float, tl_name: str | None) -> Failure:
    return Failure(
        ErrorClass.FLOOD_WAIT,
        name,
        retry_after_s=seconds,
        rpc_code=420,
        rpc_name=name,
        tl_name=tl_name,
    )


def test_scoped_flood_verdicts() -> None:
    policy = PolicyConfig()
    flood = _flood("FLOOD_WAIT_86400", 86400, "contacts.ResolveUsernameRequest")
    v = decide(flood, policy, proxy_failures=0, attempt=1, flood_scopes=True, rate_class="resolve")
    assert (v.account_cooldown_s, v.class_cooldown_s, v.rate_class) == (0, 86400, "resolve")
    assert v.retry
    old = decide(flood, policy, proxy_failures=0, attempt=1, rate_class="resolve")
    assert (old.account_cooldown_s, old.class_cooldown_s) == (86400, 0)
    slow = _flood("SLOWMODE_WAIT_30", 30, "messages.SendMessageRequest")
    v = decide(slow, policy, proxy_failures=0, attempt=1, flood_scopes=True, rate_class="send")
    assert (v.account_cooldown_s, v.chat_cooldown_s) == (0, 30)
    unknown = _flood("FLOOD_WAIT_5", 5, None)  # no request known: the account rests
    v = decide(unknown, policy, proxy_failures=0, attempt=1, flood_scopes=True)
    assert (v.account_cooldown_s, v.class_cooldown_s) == (5, 0)
    peer_flood = Failure(ErrorClass.PEER_FLOOD, "PEER_FLOOD", rpc_name="PEER_FLOOD")
    v = decide(
        peer_flood, policy, proxy_failures=0, attempt=1, flood_scopes=True, rate_class="send"
    )
    assert v.account_cooldown_s == policy.peer_flood_cooldown_s and v.class_cooldown_s == 0


def test_store_keeps_class_cooldowns_spends_and_first_seen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        store.save_class_cooldown("a1", "resolve", 2000.0, "FLOOD_WAIT: FLOOD_WAIT_1000 (420)")
        store.save_class_cooldown("a1", "join", 500.0)
        store.save_class_cooldown("a2", "read", 2000.0)
        store.save_class_cooldown("a2", "read", None)
        store.add_budget_spends([("a1", "resolve", 900.0), ("a1", "resolve", 100.0)])
        assert store.first_seen(["a1"], 10.0) == {"a1": 10.0}
    with StateStore.open(path) as store:
        assert store.load_class_cooldowns(1000.0) == {
            "a1": {"resolve": (2000.0, "FLOOD_WAIT: FLOOD_WAIT_1000 (420)")}
        }
        assert store.load_budget_spends(500.0) == [("a1", "resolve", 900.0)]
        assert store.first_seen(["a1", "a2"], 20.0) == {"a1": 10.0, "a2": 20.0}


def test_status_and_cooldowns_show_per_class_state() -> None:
    state = {
        "rate_class": "resolve",
        "cooldown_remaining_s": 86000.0,
        "cause": "FLOOD_WAIT: FLOOD_WAIT_86400 (420)",
        "budget_left": {"per_hour": 25, "per_day": 100},
        "budget_frees_in_s": 0.0,
    }
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_accounts({"accounts": [{"id": "a1", "rate_classes": [state]}]}))
    console.print(
        render_cooldowns({"id": "a1", "cooldown_remaining_s": 0, "rate_classes": [state]})
    )
    out = console.export_text()
    assert "resolve 23h53m (FLOOD_WAIT)" in out  # one compact cell per account
    assert "25/hour, 100/day" in out
    assert "FLOOD_WAIT_86400" in out
