"""Session files on disk: the file Telethon's ``SQLiteSession`` uses and its device sidecar.

Plain Python (no Telethon): the session locks (`mtpoold._sessionlock`), the session identity
(`mtpoold._sessionid`), the daemon's permission checks and ``mtpoold authorize`` all name a
session's files through here, the one place Telethon's file naming lives.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Final

from ._logformat import log_event

__all__ = [
    "DEVICE_FIELDS",
    "DEVICE_SIDECAR_SUFFIX",
    "SESSION_SUFFIX",
    "device_sidecar_path",
    "read_device_params",
    "session_file_path",
]

log = logging.getLogger("mtpoold.client")

SESSION_SUFFIX: Final = ".session"  # Telethon's SQLiteSession appends it when missing
DEVICE_SIDECAR_SUFFIX: Final = ".device.json"
#: What an account presents in initConnection; recorded by ``mtpoold authorize``.
DEVICE_FIELDS: Final = ("device_model", "system_version", "app_version", "lang_code",
                        "system_lang_code")  # fmt: skip


def session_file_path(session: str | os.PathLike[str]) -> Path:
    """The file Telethon's ``SQLiteSession`` uses for a configured ``session`` path.

    Telethon appends ``.session`` unless the name already ends with it.
    """
    text = os.fspath(session)
    return Path(text if text.endswith(SESSION_SUFFIX) else text + SESSION_SUFFIX)


def device_sidecar_path(session: str | os.PathLike[str]) -> Path:
    """``<session file>.device.json``: the device parameters the session was authorized with."""
    path = session_file_path(session)
    return path.with_name(path.name + DEVICE_SIDECAR_SUFFIX)


def read_device_params(session: str | os.PathLike[str]) -> dict[str, str]:
    """The device parameters recorded next to a session file by ``mtpoold authorize``.

    Args:
        session: The account's configured ``session`` path.

    Returns:
        The recorded `DEVICE_FIELDS` (string values only); ``{}`` if there is no sidecar. An
        unreadable or malformed sidecar is logged as a warning and treated as absent.
    """
    path = device_sidecar_path(session)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log_event(
            log,
            logging.WARNING,
            "device_sidecar_unreadable",
            path=str(path),
            error=type(exc).__name__,
        )
        return {}
    if not isinstance(data, dict):
        log_event(
            log, logging.WARNING, "device_sidecar_unreadable", path=str(path), error="not_an_object"
        )
        return {}
    return {k: v for k, v in data.items() if k in DEVICE_FIELDS and isinstance(v, str) and v}
