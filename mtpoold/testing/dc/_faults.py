"""Scripted fault injection for the loopback DC.

A :class:`Faults` book holds rules ``(action, user, method, times)``. Every RPC call that reaches
the DC (after unwrapping ``invokeWithLayer``/``initConnection``/``invokeWithoutUpdates``) takes
the first rule, in insertion order, whose user and method match, and uses one of its ``times``.

Actions: :func:`rpc_error`, :func:`delay`, :func:`drop`, :func:`blackhole` (answer, late answer,
hang-up, silence) and the protocol faults :func:`salt_storm`, :func:`corrupt_reply`,
:func:`wrong_session`, :func:`unparseable_reply` (answers Telethon cannot use).
"""

from __future__ import annotations

from typing import Final, TypeAlias, final

import attrs


@attrs.frozen
class RpcErrorAction:
    """Answer with ``rpc_error``. Attributes: code (e.g. 420), message (e.g. ``FLOOD_WAIT_37``)."""

    code: int
    message: str


@attrs.frozen
class DelayAction:
    """Answer normally, ``ms`` milliseconds later (an ``msgs_ack`` is sent at once)."""

    ms: float


@attrs.frozen
class DropAction:
    """Close the TCP connection instead of answering."""


@attrs.frozen
class BlackholeAction:
    """Never answer this call (the connection stays up and serves other calls)."""


@attrs.frozen
class SaltStormAction:
    """Answer ``bad_server_salt`` with a fresh server salt (the key's salt changes to it)."""


@attrs.frozen
class CorruptReplyAction:
    """Send the normal reply with one ciphertext byte flipped (its msg_key check fails)."""


@attrs.frozen
class WrongSessionAction:
    """Send the normal reply encrypted for another session_id."""


@attrs.frozen
class UnparseableReplyAction:
    """Answer ``rpc_result`` whose body starts with :data:`UNPARSEABLE_CONSTRUCTOR_ID`."""


#: The constructor id an :func:`unparseable_reply` result starts with (no TL type has it).
UNPARSEABLE_CONSTRUCTOR_ID: Final = 0x0BADF00D

FaultAction: TypeAlias = (
    RpcErrorAction
    | DelayAction
    | DropAction
    | BlackholeAction
    | SaltStormAction
    | CorruptReplyAction
    | WrongSessionAction
    | UnparseableReplyAction
)


def rpc_error(code: int, message: str) -> RpcErrorAction:
    """Action: answer ``rpc_error(code, message)``, e.g. ``rpc_error(420, "FLOOD_WAIT_37")``."""
    return RpcErrorAction(code, message)


def delay(ms: float) -> DelayAction:
    """Action: answer normally after ``ms`` milliseconds.

    Raises:
        ValueError: if ``ms`` is negative.
    """
    if ms < 0:
        raise ValueError(f"delay must be >= 0 ms: {ms}")
    return DelayAction(ms)


def drop() -> DropAction:
    """Action: close the client's TCP connection mid-call."""
    return DropAction()


def blackhole() -> BlackholeAction:
    """Action: swallow the call, never answer it."""
    return BlackholeAction()


def salt_storm() -> SaltStormAction:
    """Action: answer ``bad_server_salt`` carrying a fresh salt, every time the rule matches.

    Telethon adopts the new salt and resends the call at once, without limit, so with
    ``times=None`` the storm never ends; with ``times=n`` the (n+1)-th resend is answered
    normally. The auth key's server salt becomes the fresh one (its other connections then get
    one ordinary ``bad_server_salt`` too). Rule from Telethon's ``_handle_bad_server_salt``.
    """
    return SaltStormAction()


def corrupt_reply() -> CorruptReplyAction:
    """Action: send the reply in its own packet with a flipped ciphertext byte.

    Telethon logs "Security error while unpacking a received message" and drops the packet;
    the call is never answered on the client side (and not resent).
    """
    return CorruptReplyAction()


def wrong_session() -> WrongSessionAction:
    """Action: send the reply in its own packet, encrypted for a different session_id.

    Telethon rejects it as a ``SecurityError`` ("wrong session ID"), logs and drops it; the call
    is never answered on the client side.
    """
    return WrongSessionAction()


def unparseable_reply() -> UnparseableReplyAction:
    """Action: answer ``rpc_result`` whose body is :data:`UNPARSEABLE_CONSTRUCTOR_ID` followed by
    personal-looking bytes: the calling user's phone and first name from the world as TL
    strings (``"15550000000"`` / ``"Nobody"`` for a key not logged in).

    Telethon's caller gets ``telethon.errors.TypeNotFoundError`` whose ``remaining`` (and text)
    carry those bytes: tests assert they never leak into mtpoold's errors.
    """
    return UnparseableReplyAction()


@final
@attrs.define(eq=False)
class FaultRule:
    """One scripted rule. ``remaining`` is ``None`` for a rule that never runs out."""

    action: FaultAction
    user_id: int | None
    method: str | None
    remaining: int | None


@final
@attrs.define(eq=False, repr=False)
class Faults:
    """The fault book of one DC (``dc.faults``). Not thread-safe; use from the DC's Trio thread."""

    _resolve_user: object = attrs.field(alias="resolve_user")
    _rules: list[FaultRule] = attrs.field(init=False, factory=list)

    def add(
        self,
        action: FaultAction,
        *,
        user: int | str | None = None,
        method: str | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        """Script ``action`` for the next ``times`` matching calls.

        Args:
            action: from :func:`rpc_error`, :func:`delay`, :func:`drop`, :func:`blackhole`,
                :func:`salt_storm`, :func:`corrupt_reply`, :func:`wrong_session`,
                :func:`unparseable_reply`.
            user: phone (str) or user id (int) of the calling account; ``None`` for any caller,
                including keys not logged in.
            method: TL method name as Telethon spells it without ``Request``, e.g.
                ``"contacts.ResolveUsername"`` or ``"help.GetConfig"``; ``None`` for any.
            times: how many calls it applies to; ``None`` for every matching call until
                :meth:`clear`.

        Returns:
            The rule (its ``remaining`` counts down).

        Raises:
            KeyError: if ``user`` is not in the world.
            ValueError: if ``times`` < 1.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None: {times}")
        user_id = None if user is None else self._resolve_user(user)  # type: ignore[operator]
        rule = FaultRule(action, user_id, method, times)
        self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule."""
        self._rules.clear()

    def pending(self) -> list[FaultRule]:
        """The rules not used up yet, in matching order."""
        return list(self._rules)

    def take(self, user_id: int | None, method: str) -> FaultAction | None:
        """Consume and return the action for a call, or ``None`` (used by the DC)."""
        if not self._rules:
            return None
        for i, rule in enumerate(self._rules):
            if rule.user_id is not None and rule.user_id != user_id:
                continue
            if rule.method is not None and rule.method != method:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    del self._rules[i]
            return rule.action
        return None

    def __repr__(self) -> str:
        return f"<Faults {len(self._rules)} pending>"
