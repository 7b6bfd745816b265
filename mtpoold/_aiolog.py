"""The asyncio loop's exception handler: Telethon's background noise as warnings, never a crash.

Telethon runs send/receive loops, keepalives and reconnects as asyncio tasks, and leaves
futures whose exception nobody retrieves when a connection dies ("Future exception was never
retrieved" for a ``ConnectionResetError``, "Task exception was never retrieved" for an
``IncompleteReadError`` ...). trio-asyncio's default handler *re-raises* those into the loop's
nursery, which would tear the daemon down over a closed proxy stream. `install_exception_handler`
replaces it: every report is logged (closed-stream errors and never-retrieved exceptions at
WARNING, anything else at ERROR), with the account and proxy it belongs to, and counted.

Which account? The account worker sets `aio_context` around its Telethon calls (see
`aio_context_for`); asyncio tasks copy the context they are created in, so the tasks Telethon
spawns carry it. The handler reads it from the task's own context on Python 3.12+
(``Task.get_context()``), else from a note the installed task factory takes when each task is
created (a weak map, and a ``[mtpoold account=… proxy=…]`` tag on the task's name), else from
the context the handler runs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, final

import attrs

from ._errors import redact
from ._logformat import AioContext, AioContextFilter, aio_context, log_event  # re-exported

__all__ = [
    "AioContext",
    "AioContextFilter",
    "AioExceptionHandler",
    "AioExceptionStatistics",
    "aio_context",
    "aio_context_for",
    "install_exception_handler",
]

logger = logging.getLogger("mtpoold.asyncio")


@contextlib.contextmanager
def aio_context_for(account: str, proxy_key: str) -> Iterator[AioContext]:
    """Set `aio_context` for the duration of a block (the account worker wraps its calls).

    Yields:
        The `AioContext` set.
    """
    ctx = AioContext(account=account, proxy_key=proxy_key)
    token = aio_context.set(ctx)
    try:
        yield ctx
    finally:
        aio_context.reset(token)


# Exceptions that mean "the connection went away": expected with flaky proxies.
_CLOSED_STREAM_TYPES: Final = (
    ConnectionError,  # ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ...
    asyncio.IncompleteReadError,
    EOFError,
    TimeoutError,
    OSError,
)
_NEVER_RETRIEVED: Final = ("exception was never retrieved",)
_NAME_TAG_RE: Final = re.compile(r"\[mtpoold account=(?P<account>\S+) proxy=(?P<proxy>\S+)\]$")


@attrs.frozen
class AioExceptionStatistics:
    """What an `AioExceptionHandler` has seen.

    Attributes:
        count: Reports handled, in total.
        warnings: Of those, logged at WARNING (closed streams, never-retrieved exceptions).
        errors: Of those, logged at ERROR (anything else).
    """

    count: int
    warnings: int
    errors: int


@final
@attrs.define(eq=False, repr=False)
class AioExceptionHandler:
    """The exception handler `install_exception_handler` puts on a loop.

    Call it as ``handler(loop, context)`` (asyncio's handler signature). It never raises.

    Attributes:
        count: Reports handled so far (tests assert it stays 0).
    """

    count: int = attrs.field(init=False, default=0)
    _warnings: int = attrs.field(init=False, default=0)
    _errors: int = attrs.field(init=False, default=0)
    _task_contexts: weakref.WeakKeyDictionary[asyncio.Future[Any], AioContext] = attrs.field(
        init=False, factory=weakref.WeakKeyDictionary
    )

    def statistics(self) -> AioExceptionStatistics:
        """Counts of reports handled, see `AioExceptionStatistics`."""
        return AioExceptionStatistics(
            count=self.count, warnings=self._warnings, errors=self._errors
        )

    def __repr__(self) -> str:
        return f"<AioExceptionHandler count={self.count} warnings={self._warnings}>"

    def note_task(self, task: asyncio.Future[Any]) -> None:
        """Remember the current `aio_context` for `task` (called by the task factory).

        Kept twice: in a weak map (reports from a task's refcount finalizer), and as a tag
        appended to the task's name (reports from the cyclic GC, which clears weak
        references before finalizers run).
        """
        ctx = aio_context.get()
        if ctx is None:
            return
        with contextlib.suppress(TypeError):
            self._task_contexts[task] = ctx
        set_name = getattr(task, "set_name", None)
        if set_name is not None:
            with contextlib.suppress(Exception):
                tag = f"[mtpoold account={ctx.account} proxy={ctx.proxy_key}]"
                set_name(f"{task.get_name()} {tag}")  # type: ignore[attr-defined]

    def context_of(self, context: Mapping[str, Any]) -> AioContext | None:
        """Find the `AioContext` an asyncio error report belongs to."""
        for key in ("task", "future"):
            fut = context.get(key)
            if fut is None:
                continue
            get_context: Callable[[], contextvars.Context] | None = getattr(
                fut, "get_context", None
            )
            if get_context is not None:  # Python 3.12+
                with contextlib.suppress(Exception):
                    found = get_context().get(aio_context)
                    if found is not None:
                        return found
            with contextlib.suppress(TypeError):
                found = self._task_contexts.get(fut)
                if found is not None:
                    return found
            get_name = getattr(fut, "get_name", None)
            if get_name is not None:
                with contextlib.suppress(Exception):
                    m = _NAME_TAG_RE.search(str(get_name()))
                    if m is not None:
                        return AioContext(account=m["account"], proxy_key=m["proxy"])
        return aio_context.get()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        try:
            self._handle(context)
        except BaseException:  # noqa: BLE001 - a handler that raises would crash the loop
            with contextlib.suppress(BaseException):
                self.count += 1
                self._errors += 1
                log_event(logger, logging.ERROR, "asyncio_handler_failed", exc_info=True)

    def _handle(self, context: Mapping[str, Any]) -> None:
        self.count += 1
        message = str(context.get("message") or "unhandled error in asyncio")
        exc = context.get("exception")
        ctx = self.context_of(context)
        account = ctx.account if ctx is not None else None  # None: left out of the line
        proxy = ctx.proxy_key if ctx is not None else None
        what = type(exc).__name__ if exc is not None else "no exception"
        detail = redact(str(exc)) if exc is not None else ""
        quiet = isinstance(exc, _CLOSED_STREAM_TYPES) or any(s in message for s in _NEVER_RETRIEVED)
        if quiet:
            self._warnings += 1
        else:
            self._errors += 1
        log_event(
            logger,
            logging.WARNING if quiet else logging.ERROR,
            "asyncio_report",
            account=account,
            proxy=proxy,
            report=redact(message),
            error=what,
            detail=detail or None,
            # a stray closed stream is Telethon's noise: no traceback for it
            exc_info=None if quiet or exc is None else (type(exc), exc, exc.__traceback__),
        )


def install_exception_handler(loop: asyncio.AbstractEventLoop) -> AioExceptionHandler:
    """Make `loop` log asyncio error reports instead of raising them (see module docstring).

    Also installs a task factory (chained to any existing one) that notes each new task's
    `aio_context`, so reports about a task name its account even on Python < 3.12.

    Args:
        loop: The trio-asyncio loop (``asyncio.get_event_loop()`` inside ``open_loop()``).

    Returns:
        The handler, whose `count` / `statistics()` tell how many reports it handled.
    """
    handler = AioExceptionHandler()
    previous = loop.get_task_factory()

    def task_factory(
        loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        if previous is not None:
            task = previous(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        handler.note_task(task)
        return task

    loop.set_task_factory(task_factory)
    loop.set_exception_handler(handler)
    return handler
