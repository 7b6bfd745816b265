"""`mtpoold._pool.revoked_by_telegram`: which disable reasons ``accounts enable`` refuses
without ``force`` — read from the very reasons `mtpoold._policy.decide` writes."""

from __future__ import annotations

import pytest

from mtpoold._config import PolicyConfig
from mtpoold._errors import ErrorClass, Failure
from mtpoold._policy import decide
from mtpoold._pool import revoked_by_telegram


def _reason(error_class: ErrorClass, rpc_name: str | None) -> str:
    failure = Failure(error_class, "x", rpc_code=401, rpc_name=rpc_name)
    verdict = decide(failure, PolicyConfig(), proxy_failures=0, attempt=1, session_dc_id=2)
    assert verdict.disable_reason is not None
    return verdict.disable_reason


@pytest.mark.parametrize(
    "name", ["SESSION_REVOKED", "USER_DEACTIVATED", "USER_DEACTIVATED_BAN", "AUTH_KEY_UNREGISTERED"]
)
def test_telegram_revoked_or_deactivated_is_recognised(name: str) -> None:
    assert revoked_by_telegram(_reason(ErrorClass.SESSION_REVOKED, name)) == name


def test_a_session_file_turned_unreadable_is_recognised_too() -> None:
    reason = _reason(ErrorClass.SESSION_REVOKED, None)
    assert revoked_by_telegram(reason) == "SESSION_REVOKED"


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "",
        "disabled by operator",
        "flagged by panel: the session no longer works",  # an operator's words, not an RPC name
    ],
)
def test_other_reasons_are_not(reason: str | None) -> None:
    assert revoked_by_telegram(reason) is None


def test_a_frozen_account_is_not_refused() -> None:
    """Telegram lifts a freeze: the reason says to enable the account again then."""
    reason = _reason(ErrorClass.ACCOUNT_RESTRICTED, "FROZEN_METHOD_INVALID")
    assert revoked_by_telegram(reason) is None
