"""Tests for mtpoold._policy.decide: every verdict."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtpoold._config import PolicyConfig
from mtpoold._errors import ErrorClass, Failure
from mtpoold._policy import Verdict, decide, proxy_cooldown_s

POLICY = PolicyConfig()


def fail(error_class: ErrorClass, **kw: object) -> Failure:
    return Failure(error_class, "x", **kw)  # type: ignore[arg-type]


def test_decide_FLOOD_WAIT_cools_account_exactly() -> None:
    verdict = decide(
        fail(ErrorClass.FLOOD_WAIT, retry_after_s=37.0, rpc_code=420, rpc_name="FLOOD_WAIT_37"),
        POLICY,
        proxy_failures=0,
        attempt=1,
    )
    assert verdict == Verdict(account_cooldown_s=37.0, retry=True)


def test_decide_FLOOD_WAIT_without_duration_uses_backoff() -> None:
    verdict = decide(fail(ErrorClass.FLOOD_WAIT), POLICY, proxy_failures=0, attempt=2)
    assert verdict == Verdict(account_cooldown_s=30.0)


def test_decide_PEER_FLOOD_cools_account_a_day() -> None:
    verdict = decide(fail(ErrorClass.PEER_FLOOD), POLICY, proxy_failures=0, attempt=1)
    assert verdict == Verdict(account_cooldown_s=86400.0, retry=True)


def test_decide_STREAM_CLOSED_reconnects() -> None:
    verdict = decide(fail(ErrorClass.STREAM_CLOSED), POLICY, proxy_failures=0, attempt=1)
    assert verdict == Verdict(account_cooldown_s=60.0, reconnect=True, retry=True)


@pytest.mark.parametrize(
    ("failures", "cooldown"),
    [
        (0, 10.0),
        (1, 10.0),
        (2, 20.0),
        (3, 40.0),
        (6, 320.0),
        (7, 600.0),
        (50, 600.0),
        (10_000, 600.0),
    ],
)
def test_decide_PROXY_UNAVAILABLE_backs_off_exponentially(failures: int, cooldown: float) -> None:
    verdict = decide(fail(ErrorClass.PROXY_UNAVAILABLE), POLICY, proxy_failures=failures, attempt=1)
    assert verdict == Verdict(proxy_cooldown_s=cooldown, reconnect=True, retry=True)
    assert verdict.account_cooldown_s == 0.0  # infrastructure, not the account's fault


def test_proxy_cooldown_s_follows_policy() -> None:
    policy = PolicyConfig(proxy_cooldown_min_s=1.5, proxy_cooldown_max_s=5.0)
    assert [proxy_cooldown_s(policy, n) for n in (1, 2, 3, 4)] == [1.5, 3.0, 5.0, 5.0]


def test_decide_SESSION_REVOKED_disables() -> None:
    verdict = decide(
        fail(ErrorClass.SESSION_REVOKED, rpc_code=401, rpc_name="AUTH_KEY_UNREGISTERED"),
        POLICY,
        proxy_failures=0,
        attempt=1,
    )
    assert verdict == Verdict(
        disable_reason="AUTH_KEY_UNREGISTERED: the session no longer works (revoked, expired,"
        " duplicated, banned or deactivated); re-authorize this account",
        retry=True,
    )


def test_decide_SESSION_REVOKED_without_rpc_name_names_the_class() -> None:
    verdict = decide(fail(ErrorClass.SESSION_REVOKED), POLICY, proxy_failures=0, attempt=1)
    assert verdict.disable_reason is not None
    assert verdict.disable_reason.startswith("SESSION_REVOKED: ")


def test_decide_PROTOCOL_ERROR_rests_and_reconnects_the_account() -> None:
    verdict = decide(fail(ErrorClass.PROTOCOL_ERROR), POLICY, proxy_failures=0, attempt=1)
    assert verdict == Verdict(account_cooldown_s=5.0, reconnect=True, retry=True)
    policy = PolicyConfig(protocol_error_cooldown_s=0.5)
    assert decide(fail(ErrorClass.PROTOCOL_ERROR), policy, proxy_failures=3, attempt=2) == (
        Verdict(account_cooldown_s=0.5, reconnect=True, retry=True)  # the proxy is not blamed
    )


@pytest.mark.parametrize("name", ["FROZEN_METHOD_INVALID", "FROZEN_PARTICIPANT_MISSING"])
def test_decide_ACCOUNT_RESTRICTED_disables_naming_the_rpc_error(name: str) -> None:
    verdict = decide(
        fail(ErrorClass.ACCOUNT_RESTRICTED, rpc_code=420, rpc_name=name),
        POLICY,
        proxy_failures=0,
        attempt=1,
    )
    assert verdict == Verdict(
        disable_reason=f"{name}: Telegram froze or restricted this account (it can only appeal,"
        " see https://core.telegram.org/api/auth#frozen-accounts); enable it again once"
        " Telegram lifted the restriction",
        retry=True,
    )


def test_decide_WRONG_DC_account_level_disables() -> None:
    failure = fail(
        ErrorClass.WRONG_DC, rpc_code=303, rpc_name="USER_MIGRATE_4", dc_id=4, dc_scope="account"
    )
    verdict = decide(failure, POLICY, proxy_failures=0, attempt=1, session_dc_id=2)
    assert verdict == Verdict(
        disable_reason="USER_MIGRATE_4: the session points at DC 2 but Telegram says the account"
        " lives on DC 4; re-authorize this account",
        retry=True,
    )
    unknown = decide(failure, POLICY, proxy_failures=0, attempt=1)
    assert unknown.disable_reason == (
        "USER_MIGRATE_4: the session points at a different DC but Telegram says the account"
        " lives on DC 4; re-authorize this account"
    )


@pytest.mark.parametrize("name", ["FILE_MIGRATE_4", "STATS_MIGRATE_4"])
def test_decide_WRONG_DC_call_level_is_final_without_penalty(name: str) -> None:
    failure = fail(ErrorClass.WRONG_DC, rpc_code=303, rpc_name=name, dc_id=4, dc_scope="call")
    verdict = decide(failure, POLICY, proxy_failures=0, attempt=1, session_dc_id=2)
    assert verdict == Verdict(retry=False)


def test_decide_UNSUPPORTED_REPLY_is_final_without_penalty() -> None:
    verdict = decide(fail(ErrorClass.UNSUPPORTED_REPLY), POLICY, proxy_failures=0, attempt=1)
    assert verdict == Verdict(retry=False)


def test_decide_PEER_NOT_FOUND_is_final_without_penalty() -> None:
    verdict = decide(fail(ErrorClass.PEER_NOT_FOUND), POLICY, proxy_failures=0, attempt=1)
    assert verdict == Verdict(retry=False)


def test_decide_DEADLINE_EXCEEDED_reconnects_without_cooldown() -> None:
    verdict = decide(fail(ErrorClass.DEADLINE_EXCEEDED), POLICY, proxy_failures=0, attempt=1)
    assert verdict == Verdict(account_cooldown_s=0.0, reconnect=True, retry=True)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 10.0), (2, 30.0), (3, 60.0), (4, 120.0)])
def test_decide_GENERIC_backoff(attempt: int, delay: float) -> None:
    verdict = decide(fail(ErrorClass.GENERIC), POLICY, proxy_failures=0, attempt=attempt)
    assert verdict == Verdict(account_cooldown_s=0.0, retry=True, retry_delay_s=delay)


def test_decide_GENERIC_backoff_last_entry_repeats_and_cooldown() -> None:
    policy = PolicyConfig(max_attempts=10, backoff_s=(1.0, 2.5), generic_cooldown_s=5.0)
    delays = [
        decide(fail(ErrorClass.GENERIC), policy, proxy_failures=0, attempt=a).retry_delay_s
        for a in range(1, 6)
    ]
    assert delays == [1.0, 2.5, 2.5, 2.5, 2.5]
    assert (
        decide(fail(ErrorClass.GENERIC), policy, proxy_failures=0, attempt=1).account_cooldown_s
        == 5.0
    )


@pytest.mark.parametrize(
    "error_class",
    [
        ErrorClass.NO_ACCOUNT_AVAILABLE,
        ErrorClass.INVALID_ARGUMENT,
        ErrorClass.SHUTTING_DOWN,
        ErrorClass.CANCELLED,
    ],
)
def test_decide_pool_classes_are_final(error_class: ErrorClass) -> None:
    assert decide(fail(error_class), POLICY, proxy_failures=0, attempt=1) == Verdict(retry=False)


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_decide_max_attempts_stops_retries_for_every_class(error_class: ErrorClass) -> None:
    failure = fail(error_class, retry_after_s=5.0 if error_class is ErrorClass.FLOOD_WAIT else None)
    before = decide(failure, POLICY, proxy_failures=1, attempt=POLICY.max_attempts - 1)
    last = decide(failure, POLICY, proxy_failures=1, attempt=POLICY.max_attempts)
    assert last.retry is False
    assert last.retry_delay_s == 0.0
    # the penalty stays what it was
    assert attrs.evolve(last, retry=before.retry, retry_delay_s=0.0) == attrs.evolve(
        before, retry_delay_s=0.0
    )
    assert decide(failure, POLICY, proxy_failures=1, attempt=POLICY.max_attempts + 3).retry is False


def test_decide_max_attempts_one() -> None:
    policy = PolicyConfig(max_attempts=1)
    verdict = decide(fail(ErrorClass.STREAM_CLOSED), policy, proxy_failures=0, attempt=1)
    assert verdict == Verdict(account_cooldown_s=60.0, reconnect=True, retry=False)


@pytest.mark.parametrize(("attempt", "failures"), [(0, 0), (-1, 0), (1, -1)])
def test_decide_rejects_bad_counters(attempt: int, failures: int) -> None:
    with pytest.raises(
        ValueError, match=r"^(attempt must be >= 1|proxy_failures must be >= 0), got -?\d+$"
    ):
        decide(fail(ErrorClass.GENERIC), POLICY, proxy_failures=failures, attempt=attempt)


@given(
    error_class=st.sampled_from(list(ErrorClass)),
    attempt=st.integers(1, 100),
    failures=st.integers(0, 10_000),
    wait=st.one_of(st.none(), st.floats(0, 1e6)),
)
def test_decide_is_total_and_bounded(
    error_class: ErrorClass, attempt: int, failures: int, wait: float | None
) -> None:
    verdict = decide(
        Failure(error_class, "x", retry_after_s=wait),
        POLICY,
        proxy_failures=failures,
        attempt=attempt,
    )
    assert verdict.account_cooldown_s >= 0
    assert 0 <= verdict.proxy_cooldown_s <= POLICY.proxy_cooldown_max_s
    assert verdict.retry_delay_s >= 0
    if attempt >= POLICY.max_attempts:
        assert verdict.retry is False
