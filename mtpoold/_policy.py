"""What to do after a failed call: `decide` turns a `Failure` into a `Verdict`.

Pure functions, no I/O and no clock: the pool applies the verdict (cooldowns in the state store,
reconnects in the account worker, the retry in its scheduling loop). Where the defaults come
from: docs/ARCHITECTURE.md, "Where the PHP system's numbers went"; Telegram's own semantics are
linked at the rules of `decide`.
"""

from __future__ import annotations

from typing import Final

import attrs

from ._config import PolicyConfig
from ._errors import ErrorClass, Failure

__all__ = ["Verdict", "decide", "proxy_cooldown_s"]

_MAX_DOUBLINGS: Final = 64  # 2**64 * any sane minimum is past any cap; avoids float overflow


@attrs.frozen
class Verdict:
    """What the pool does about one failed call.

    Attributes:
        account_cooldown_s: Keep the account out of scheduling this long, seconds (0 = no).
        proxy_cooldown_s: Keep the account's whole proxy lane out this long, seconds (0 = no).
        disable_reason: Disable the account with this reason (until enabled by an operator);
            None = keep it enabled.
        reconnect: Drop and rebuild the account's client connection before its next call.
        retry: Reroute the job to another account (False = the job fails with this error).
        retry_delay_s: Wait this long before the retry when no other account is free, seconds.
        class_cooldown_s: Keep the (account, ``rate_class``) out this long, seconds (0 = no):
            a FLOOD_WAIT with flood scopes on.
        chat_cooldown_s: Keep the (account, the job's chat) out this long, seconds (0 = no):
            SLOWMODE_WAIT with flood scopes on (a job without a chat cools ``rate_class``).
        rate_class: The rate class of the request that failed (`mtpoold._rateclass`), or None.
    """

    account_cooldown_s: float = 0.0
    proxy_cooldown_s: float = 0.0
    disable_reason: str | None = None
    reconnect: bool = False
    retry: bool = True
    retry_delay_s: float = 0.0
    class_cooldown_s: float = 0.0
    chat_cooldown_s: float = 0.0
    rate_class: str | None = None


def proxy_cooldown_s(policy: PolicyConfig, proxy_failures: int) -> float:
    """Cooldown of a proxy after ``proxy_failures`` consecutive failures, in seconds.

    ``proxy_cooldown_min_s * 2 ** (proxy_failures - 1)``, capped at ``proxy_cooldown_max_s``
    (defaults: 10 s, 20 s, 40 s, ... 600 s). ``proxy_failures`` below 1 counts as 1.
    """
    doublings = min(max(proxy_failures, 1) - 1, _MAX_DOUBLINGS)
    return float(min(policy.proxy_cooldown_min_s * 2.0**doublings, policy.proxy_cooldown_max_s))


def _backoff_s(policy: PolicyConfig, attempt: int) -> float:
    return float(policy.backoff_s[min(attempt - 1, len(policy.backoff_s) - 1)])


def decide(
    failure: Failure,
    policy: PolicyConfig,
    *,
    proxy_failures: int,
    attempt: int,
    session_dc_id: int | None = None,
    flood_scopes: bool = False,
    rate_class: str | None = None,
) -> Verdict:
    """Decide what to do after a call failed with ``failure``.

    Rules (the defaults' provenance: ``docs/ARCHITECTURE.md``, "Where the PHP system's
    numbers went"; Telegram's error semantics linked below; the RPC error lists and their
    sources are in `mtpoold._classify`):

    - FLOOD_WAIT: the account rests exactly ``retry_after_s`` (what Telegram asked); the job
      is rerouted. A 420 without a
      duration rests ``backoff_s[attempt-1]`` (the GENERIC backoff) as a guess.
      With ``flood_scopes`` (``[economy] flood_scopes``) a FLOOD_WAIT_N (FLOOD_PREMIUM_WAIT_N,
      ...) whose request's ``rate_class`` is known cools only that (account, rate class) for
      exactly N s — Telegram floods per method (https://core.telegram.org/api/errors#420-flood:
      "the given method"); SLOWMODE_WAIT_N cools the (account, chat) pair (a supergroup's slow
      mode is per chat, https://core.telegram.org/api/rights#slow-mode). Account-wide limits
      (PEER_FLOOD, frozen, revoked) stay account-wide.
    - PEER_FLOOD: the account rests ``peer_flood_cooldown_s`` (24 h: Telegram gives no
      duration, the spam limit lasts about a day); rerouted.
    - STREAM_CLOSED: the account rests ``stream_closed_cooldown_s`` (60 s) and reconnects;
      rerouted.
    - PROXY_UNAVAILABLE: the proxy lane rests ``proxy_cooldown_min_s * 2**(proxy_failures-1)``
      capped at ``proxy_cooldown_max_s`` (10 s doubling to 10 min); the account is not
      blamed; reconnect; rerouted.
    - PROTOCOL_ERROR: the account rests ``protocol_error_cooldown_s`` (5 s) and reconnects (the
      MTProto stream of that one connection misbehaved: replace it); the proxy is not blamed;
      rerouted.
    - SESSION_REVOKED: the account is disabled (only re-authorising helps); rerouted.
    - ACCOUNT_RESTRICTED: the account is disabled with a reason naming the RPC error
      (FROZEN_METHOD_INVALID & co.: Telegram froze the account, it can only appeal —
      https://core.telegram.org/api/auth#frozen-accounts); rerouted.
    - WRONG_DC with ``dc_scope == "account"`` (USER_/PHONE_/NETWORK_MIGRATE_N): the account is
      disabled, reason "the session points at DC M but Telegram says the account lives on DC
      N; re-authorize" (M = ``session_dc_id`` when known): an authorized session's auth key
      belongs to its home DC, so following the redirect means logging in again (Telethon's own
      handling of USER_MIGRATE drops the auth key); rerouted.
    - WRONG_DC with ``dc_scope == "call"`` (FILE_/STATS_MIGRATE_N): final, no penalty — the
      call must run on DC N and every account holds one connection to its own DC, so no
      retry can help (Telegram, "303 SEE_OTHER": https://core.telegram.org/api/errors).
    - UNSUPPORTED_REPLY: final, no penalty, not rerouted — Telethon's TL layer cannot read the
      answer, which every account would get the same way; only upgrading Telethon helps.
    - PEER_NOT_FOUND: final, no penalty.
      Note the failure is only this account's view (CHANNEL_PRIVATE and friends).
    - DEADLINE_EXCEEDED: reconnect, since the connection state is unknown after a cancelled
      call; no cooldown; rerouted.
    - GENERIC: the account rests ``generic_cooldown_s``; rerouted after
      ``backoff_s[min(attempt-1, len-1)]`` (10/30/60/120/300 s).
    - Pool-side classes (NO_ACCOUNT_AVAILABLE, INVALID_ARGUMENT, SHUTTING_DOWN, CANCELLED):
      final, no penalty.
    - Whatever the class: once ``attempt >= max_attempts`` the job is not retried (penalties
      still apply).

    Args:
        failure: What `mtpoold._classify.classify` made of the exception.
        policy: The ``[policy]`` settings.
        proxy_failures: Consecutive PROXY_UNAVAILABLE failures of this proxy, this one
            included (only used for PROXY_UNAVAILABLE).
        attempt: Number of the attempt that just failed, 1-based.
        session_dc_id: The DC the account's session points at, if the caller knows it (only
            used in the WRONG_DC disable reason).

    Returns:
        The `Verdict`.

    Raises:
        ValueError: if ``attempt < 1`` or ``proxy_failures < 0``.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if proxy_failures < 0:
        raise ValueError(f"proxy_failures must be >= 0, got {proxy_failures}")
    verdict = _decide(
        failure, policy, proxy_failures=proxy_failures, attempt=attempt, session_dc_id=session_dc_id
    )
    if flood_scopes and failure.error_class is ErrorClass.FLOOD_WAIT:
        verdict = _scoped(failure, verdict, rate_class)
    if verdict.retry and attempt >= policy.max_attempts:
        verdict = attrs.evolve(verdict, retry=False, retry_delay_s=0.0)
    return verdict


def _decide(
    failure: Failure,
    policy: PolicyConfig,
    *,
    proxy_failures: int,
    attempt: int,
    session_dc_id: int | None,
) -> Verdict:
    match failure.error_class:
        case ErrorClass.FLOOD_WAIT:
            wait_s = failure.retry_after_s
            return Verdict(
                account_cooldown_s=float(wait_s)
                if wait_s is not None
                else _backoff_s(policy, attempt)
            )
        case ErrorClass.PEER_FLOOD:
            return Verdict(account_cooldown_s=policy.peer_flood_cooldown_s)
        case ErrorClass.STREAM_CLOSED:
            return Verdict(account_cooldown_s=policy.stream_closed_cooldown_s, reconnect=True)
        case ErrorClass.PROXY_UNAVAILABLE:
            return Verdict(
                proxy_cooldown_s=proxy_cooldown_s(policy, proxy_failures), reconnect=True
            )
        case ErrorClass.SESSION_REVOKED:
            name = failure.rpc_name or failure.error_class.value
            return Verdict(
                disable_reason=(
                    f"{name}: the session no longer works (revoked, expired, duplicated,"
                    " banned or deactivated); re-authorize this account"
                )
            )
        case ErrorClass.PROTOCOL_ERROR:
            return Verdict(account_cooldown_s=policy.protocol_error_cooldown_s, reconnect=True)
        case ErrorClass.ACCOUNT_RESTRICTED:
            name = failure.rpc_name or failure.error_class.value
            return Verdict(
                disable_reason=(
                    f"{name}: Telegram froze or restricted this account (it can only appeal,"
                    " see https://core.telegram.org/api/auth#frozen-accounts); enable it again"
                    " once Telegram lifted the restriction"
                )
            )
        case ErrorClass.WRONG_DC if failure.dc_scope == "account":
            return Verdict(disable_reason=_wrong_dc_reason(failure, session_dc_id))
        case ErrorClass.WRONG_DC | ErrorClass.UNSUPPORTED_REPLY:
            return Verdict(retry=False)
        case ErrorClass.PEER_NOT_FOUND:
            return Verdict(retry=False)
        case ErrorClass.DEADLINE_EXCEEDED:
            return Verdict(account_cooldown_s=0.0, reconnect=True)
        case ErrorClass.GENERIC:
            return Verdict(
                account_cooldown_s=policy.generic_cooldown_s,
                retry_delay_s=_backoff_s(policy, attempt),
            )
        case _:  # produced by the pool itself: nothing to blame, nothing to retry
            return Verdict(retry=False)


def _scoped(failure: Failure, verdict: Verdict, rate_class: str | None) -> Verdict:
    """A FLOOD_WAIT's account cooldown moved to its (account, class) or (account, chat)."""
    wait_s = failure.retry_after_s
    if wait_s is None:
        return verdict  # a 420 without a duration: no scope known, the account rests
    if (failure.rpc_name or "").upper().startswith("SLOWMODE_WAIT"):
        return attrs.evolve(
            verdict, account_cooldown_s=0.0, chat_cooldown_s=float(wait_s), rate_class=rate_class
        )
    if rate_class is None:
        return verdict
    return attrs.evolve(
        verdict, account_cooldown_s=0.0, class_cooldown_s=float(wait_s), rate_class=rate_class
    )


def _wrong_dc_reason(failure: Failure, session_dc_id: int | None) -> str:
    name = failure.rpc_name or failure.error_class.value
    home = f"DC {failure.dc_id}" if failure.dc_id is not None else "another DC"
    points_at = f"DC {session_dc_id}" if session_dc_id is not None else "a different DC"
    return (
        f"{name}: the session points at {points_at} but Telegram says the account lives on"
        f" {home}; re-authorize this account"
    )
