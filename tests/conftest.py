"""Shared test set-up."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_runtime_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test gets its own ``$XDG_RUNTIME_DIR``, inherited by the daemons it spawns.

    String sessions are locked machine-wide by a hash of their text in that directory; tests
    (and test runs started concurrently on this machine) that use the same demo session
    strings must not meet there unless a test means them to.
    """
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    runtime.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime


#: Environment variables that point the CLI and the daemon at a config, a daemon or systemd:
#: an operator's shell must not leak them into the tests.
MTPOOLD_ENV = (
    "MTPOOLD_CONFIG",
    "MTPOOLD_URL",
    "MTPOOLD_TOKEN_FILE",
    "MTPOOLD_LOCK_DIR",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MTPOOLD_ENV:
        monkeypatch.delenv(name, raising=False)
