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
