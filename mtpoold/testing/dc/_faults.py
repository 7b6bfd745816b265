"""Scripted fault injection for the loopback DC.

A :class:`Faults` book holds rules ``(action, user, method, times)``. Every RPC call that reaches
the DC (after unwrapping ``invokeWithLayer``/``initConnection``/``invokeWithoutUpdates``) takes
the first rule, in insertion order, whose user and method match, and uses one of its ``times``.
"""

from __future__ import annotations

from typing import TypeAlias, final

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


FaultAction: TypeAlias = RpcErrorAction | DelayAction | DropAction | BlackholeAction


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
            action: from :func:`rpc_error`, :func:`delay`, :func:`drop`, :func:`blackhole`.
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
