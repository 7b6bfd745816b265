"""What ``mtpoold call`` shows on stderr while a job waits long: ``waiting 12 s…`` in place.

A job may wait tens of seconds (backoffs, cooldowns, a busy proxy lane) before its reply;
`show_waiting` runs beside the request and, only when its stream is a terminal, writes the
seconds waited once `PROGRESS_AFTER_S` have passed, rewriting the same line every
`PROGRESS_EVERY_S`, and erases it when cancelled (the reply came). Pipes, files and the
tests' captured stderr get nothing.
"""

from __future__ import annotations

from typing import Final, Protocol

import trio

__all__ = ["PROGRESS_AFTER_S", "PROGRESS_EVERY_S", "TextStream", "show_waiting"]

#: Seconds a job waits before the progress line appears.
PROGRESS_AFTER_S: Final = 2.0
#: Seconds between updates of the line.
PROGRESS_EVERY_S: Final = 1.0
_ERASE: Final = "\r\x1b[K"  # carriage return, erase to the end of the line


class TextStream(Protocol):
    """What `show_waiting` writes to (``sys.stderr``)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


async def show_waiting(
    stream: TextStream,
    *,
    after_s: float = PROGRESS_AFTER_S,
    every_s: float = PROGRESS_EVERY_S,
) -> None:
    """Show ``waiting N s…`` on ``stream`` until cancelled, then erase it.

    Runs until cancelled (start it in the nursery of the request and cancel it when the
    reply is in). Writes nothing unless ``stream.isatty()``; erases the line only if it
    wrote one.

    Args:
        stream: A text stream, normally ``sys.stderr``.
        after_s: Seconds before the first line.
        every_s: Seconds between updates.
    """
    if not stream.isatty():
        await trio.sleep_forever()
    start = trio.current_time()
    shown = False
    try:
        await trio.sleep(after_s)
        while True:
            waited = int(trio.current_time() - start)
            stream.write(f"{_ERASE}waiting {waited} s…")
            stream.flush()
            shown = True
            await trio.sleep(every_s)
    finally:
        if shown:
            stream.write(_ERASE)
            stream.flush()
