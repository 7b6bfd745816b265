"""Shared test set-up."""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything alive once the tests are collected (the modules they import, the
    collected items) into the collector's permanent generation (``gc.freeze()``).

    Each test ends with a full ``gc.collect()`` (see `_no_unretrieved_asyncio_futures`);
    without this it walks that whole import-time heap, some 0.2 s a test on this suite. Objects
    a test creates are never frozen, so its garbage is still collected (and reported) in the
    test that made it.
    """
    gc.collect()
    gc.freeze()


def _flock(path: Path, mode: int) -> TextIO:
    lock = path.open("a")
    fcntl.flock(lock, mode)
    return lock


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[Any]:
    """Under pytest-xdist, a test marked ``alone`` runs (set-up to teardown) while no test runs
    on another worker: it measures spacings on the real clock that CPU contention from a
    neighbouring test would blur. Others share a lock (``flock``) the ``alone`` one takes
    exclusively; a turnstile lock taken first lets a waiting ``alone`` test in before the
    other workers' next tests. Without xdist every test runs alone anyway: nothing is locked.
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        return (yield)
    # xdist gives each worker a --basetemp inside the run's own temporary directory
    worker_temp = item.config.option.basetemp
    run_temp = Path(worker_temp).parent if worker_temp else Path(tempfile.gettempdir())
    base = run_temp / f"mtpoold-tests-{run_id}"
    alone = item.get_closest_marker("alone") is not None
    turnstile = _flock(base.with_suffix(".turnstile"), fcntl.LOCK_EX)
    try:
        run = _flock(base.with_suffix(".run"), fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
    finally:
        turnstile.close()  # closing the file releases its lock
    try:
        return (yield)
    finally:
        run.close()


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
    # The CLI renders its tables for a terminal of $COLUMNS; pytest-xdist's workers set
    # COLUMNS=80 and LINES=24.
    "COLUMNS",
    "LINES",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MTPOOLD_ENV:
        monkeypatch.delenv(name, raising=False)


#: What asyncio says about a future or task nobody awaited (its own logger, or our handler's).
AIO_LEAK_MARKERS = ("never retrieved", "Task was destroyed")
#: Loggers those reports reach: asyncio's default handler, and `mtpoold._aiolog`'s.
AIO_LEAK_LOGGERS = ("asyncio", "mtpoold.asyncio")


class _AioLeakRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return
        if any(marker in message for marker in AIO_LEAK_MARKERS):
            self.reports.append(f"{record.name}: {message}")


@pytest.fixture
def aio_leak_reports_expected() -> None:
    """Request this in a test that provokes "never retrieved" reports on purpose."""


@pytest.fixture(autouse=True)
def _no_unretrieved_asyncio_futures(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test during which asyncio reported a future or task nobody retrieved
    ("Future exception was never retrieved", "Task was destroyed but it is pending"), via
    asyncio's logger or the exception handler `mtpoold._aiolog` installs. The garbage
    collector runs at the end of the test, so such reports land in the test that caused them.
    """
    recorder = _AioLeakRecorder()
    loggers = [logging.getLogger(name) for name in AIO_LEAK_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(recorder)
        if lg.getEffectiveLevel() > logging.WARNING:
            lg.setLevel(logging.WARNING)
    try:
        yield
        gc.collect()
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(recorder)
            lg.setLevel(level)
    if recorder.reports and "aio_leak_reports_expected" not in request.fixturenames:
        pytest.fail(
            "asyncio reported unretrieved futures or destroyed tasks:\n"
            + "\n".join(recorder.reports)
        )
