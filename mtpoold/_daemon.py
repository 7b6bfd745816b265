"""The composition root: config -> state dir -> token -> store -> pool -> websocket server.

Also the process's manners: signals (SIGTERM/SIGINT graceful stop, SIGHUP reload),
sd_notify (READY, STATUS, WATCHDOG, STOPPING) and structured ``key=value`` logging to stderr.
Nothing imports this module but the CLI.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import cattrs
import trio

from ._compose import open_pool
from ._config import Config, ProxyConfig, load_config, proxy_key
from ._errors import ConfigError, redact
from ._pool import ReloadSummary
from ._sdnotify import sd_notify, watchdog_interval_s
from ._secrets import warn_if_exposed
from ._server import PoolAPI, RpcServer
from ._sessionfiles import session_file_path
from ._sessionlock import SessionLocked, lock_sessions_of
from ._stats import PoolStatistics
from ._store import StateStore
from ._token import ensure_token, is_private, token_path

__all__ = [
    "DaemonPool",
    "LogfmtFormatter",
    "PoolFactory",
    "Reloader",
    "configure_logging",
    "migrate_proxy_keys",
    "run_daemon",
    "state_dir_problem",
    "warn_about_exposed_secrets",
]

_log = logging.getLogger("mtpoold.daemon")

STATUS_INTERVAL_S: Final = 10.0  # seconds between STATUS= lines sent to systemd
STATE_DIR_MODE: Final = 0o700
STORE_FILE_NAME: Final = "state.sqlite3"


# --- the pool as the daemon sees it ---------------------------------------------------------------


class DaemonPool(PoolAPI, Protocol):
    """What the composition root needs of a pool beyond the server's `PoolAPI`: statistics
    for systemd's STATUS line, reload, and the start of a shutdown (`mtpoold.Pool` is one)."""

    def statistics(self, *, accounts: bool = True) -> PoolStatistics: ...

    async def reload(self, config: Config) -> ReloadSummary: ...

    def begin_shutdown(self) -> None: ...


class PoolFactory(Protocol):
    """Opens the daemon's pool: `mtpoold._compose.open_pool` (tests pass their own)."""

    def __call__(
        self, config: Config, *, store: StateStore
    ) -> AbstractAsyncContextManager[DaemonPool]: ...


# --- logging --------------------------------------------------------------------------------------


class LogfmtFormatter(logging.Formatter):
    """``ts=2025-01-01T00:00:00.123Z level=info logger=mtpoold.server <message>``.

    Our messages are already ``event key=value ...``; third-party messages are quoted as
    ``msg="..."``. Tracebacks (bugs only) follow on their own lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ms = int(record.msecs)
        message = record.getMessage()
        if not record.name.startswith("mtpoold"):
            message = "msg=" + _quote(message)
        line = f"ts={ts}.{ms:03d}Z level={record.levelname.lower()} logger={record.name} {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """mtpoold's own handler, so that `configure_logging` replaces only itself."""


def configure_logging(level: int | str = logging.INFO) -> None:
    """Send every log record to stderr as one ``key=value`` line. Idempotent.

    Args:
        level: Root level, e.g. ``logging.INFO`` or ``"DEBUG"``.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("trio-websocket").setLevel(max(root.level, logging.INFO))
    # Telethon logs every connect and disconnect at INFO; our own call lines say what matters.
    logging.getLogger("telethon").setLevel(max(root.level, logging.WARNING))


# --- pieces ---------------------------------------------------------------------------------------


def prepare_state_dir(path: Path) -> Path:
    """Create the state directory with mode 0700 if it is missing.

    An existing directory keeps its mode (systemd's StateDirectory= manages it); group or
    world access is logged as a warning.

    Raises:
        OSError: if it cannot be created.
    """
    path.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        _log.warning("state_dir.permissive path=%s mode=%o expected=700", path, mode)
    return path


def state_dir_problem(path: Path) -> str | None:
    """Whether the state directory exists or can be created, and is writable: a start-up
    check run by ``check-config`` and ``run`` before anything is created.

    Args:
        path: ``daemon.state_dir`` (absolute).

    Returns:
        None if usable, else one sentence naming the path and what is wrong (a regular
        file on the way, a directory that is not writable).
    """
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            return f"daemon.state_dir {path}: {probe} is a dangling symlink"
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "is not a directory" if probe == path else "is a file, not a directory"
        return f"daemon.state_dir {path} cannot be created: {probe} {what}"
    if not os.access(probe, os.W_OK | os.X_OK):
        verb = "is not writable" if probe == path else "is not writable, so it cannot be created"
        return f"daemon.state_dir {path}: {probe} {verb}"
    return None


def _php_proxy_key(proxy: ProxyConfig) -> str:
    """A proxy's key before `proxy_key` (docs/ARCHITECTURE.md, "Where the PHP system's numbers
    went"): SHA-1 of its canonical JSON. Internal: only to find old state-store rows; never
    shown."""
    canonical = json.dumps(
        {
            "host": proxy.host,
            "password": proxy.password,
            "port": proxy.port,
            "type": proxy.type,
            "username": proxy.username,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:16]


def migrate_proxy_keys(store: StateStore, config: Config) -> int:
    """Move state-store rows of the configured proxies from their old key (`_php_proxy_key`,
    which let the password be guessed from a log line) to `mtpoold._config.proxy_key`, so
    their cooldowns survive the upgrade and the old hash leaves the store.

    Returns:
        How many rows were moved (logged when > 0).
    """
    renames = {_php_proxy_key(p): proxy_key(p) for p in config.proxies}
    moved = store.rename_proxies(renames)
    if moved:
        _log.info("store.proxy_keys_migrated rows=%d now=proxy_name", moved)
    return moved


def _open_store(state_dir: Path, config: Config) -> StateStore:
    store = StateStore.open(state_dir / STORE_FILE_NAME)
    try:
        migrate_proxy_keys(store, config)
    except BaseException:
        store.close()
        raise
    return store


def _summary(pool: DaemonPool, server: RpcServer) -> str:
    try:
        s = pool.statistics(accounts=False)  # the counts only: cheap every STATUS_INTERVAL_S
        srv = server.statistics()
        return (
            f"{s.accounts_ready}/{s.accounts_total} accounts ready, {s.accounts_cooling} cooling,"
            f" {s.accounts_disabled} disabled; {s.jobs_in_flight} jobs in flight;"
            f" {srv.connections} connections"
        )
    except Exception:  # a status line must never take the daemon down
        _log.debug("status.summary_failed", exc_info=True)
        return "running"


async def _status_loop(pool: DaemonPool, server: RpcServer) -> None:
    next_at = trio.current_time()
    while True:
        sd_notify(f"STATUS={_summary(pool, server)}")
        next_at += STATUS_INTERVAL_S
        await trio.sleep_until(next_at)


async def _watchdog_loop(interval_s: float) -> None:
    next_at = trio.current_time()
    while True:
        sd_notify("WATCHDOG=1")
        next_at += interval_s
        await trio.sleep_until(next_at)


def config_holds_secrets(config: Config) -> bool:
    """Whether a config file carries secrets: an ``api_hash``, an inline session string, a
    proxy password or an MTProxy secret."""
    return any(a.api_hash or a.session_string for a in config.accounts) or any(
        p.password or p.secret for p in config.proxies
    )


def warn_about_exposed_secrets(config: Config, config_path: Path | None) -> int:
    """Log a warning for each file holding secrets that group or others can access.

    Checks the config file (when it holds secrets, see `config_holds_secrets`) and every
    account's session file. Nothing is changed: the files belong to the operator.

    Returns:
        How many warnings were logged.
    """
    warned = 0
    if config_path is not None and config_holds_secrets(config):
        warned += warn_if_exposed(config_path, "config file", allow_own_group=True)
    for account in config.accounts:
        if account.session is not None:
            warned += warn_if_exposed(session_file_path(account.session), "session file")
    return warned


@attrs.define(eq=False)
class Reloader:
    """Re-reads the daemon's config file and hands it to the pool; SIGHUP and the ``reload``
    method both go through one instance, one reload at a time.

    Attributes:
        pool: The running pool.
        config: The config in force.
        config_path: The file to re-read, or None (no reload possible).
    """

    pool: DaemonPool
    config: Config
    config_path: Path | None
    _lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)

    async def __call__(self) -> dict[str, Any]:
        """Reload now.

        Returns:
            ``{"generation", "added", "removed", "reconnected", "config_path", "notes"}``:
            the pool's `ReloadSummary` plus notes such as "daemon settings apply after a
            restart".

        Raises:
            ConfigError: listing every problem (invalid file, unusable account, session
                held elsewhere, no config path); the daemon keeps running on the old config
                and each problem is logged.
        """
        async with self._lock:
            sd_notify("RELOADING=1")
            try:
                return await self._reload()
            except ConfigError as exc:
                for problem in exc.problems:
                    _log.error(
                        "reload.config_invalid path=%s problem=%s",
                        self.config_path,
                        _quote(problem),
                    )
                _log.error("reload.rejected path=%s keeping=current_config", self.config_path)
                raise
            finally:
                sd_notify("READY=1")

    async def _reload(self) -> dict[str, Any]:
        if self.config_path is None:
            raise ConfigError(["the daemon was started without a config file; nothing to reload"])
        new = await trio.to_thread.run_sync(load_config, self.config_path)
        try:
            result = await self.pool.reload(new)
        except SessionLocked as exc:
            raise ConfigError([str(exc)]) from None
        except ConfigError:
            raise
        except Exception as exc:
            _log.exception("reload.failed")
            reason = redact(f"{type(exc).__name__}: {exc}")
            raise ConfigError([f"reload failed: {reason}"]) from None
        notes = []
        if new.daemon != self.config.daemon:
            notes.append("[daemon] settings changed: they apply after a restart")
            _log.warning("reload.daemon_changed note=listen_and_limits_apply_after_restart")
        self.config = new
        warn_about_exposed_secrets(new, self.config_path)
        summary: dict[str, Any] = cattrs.unstructure(result)
        _log.info(
            "reload.done path=%s generation=%s accounts=%d proxies=%d added=%d removed=%d",
            self.config_path,
            summary["generation"],
            len(new.accounts),
            len(new.proxies),
            len(summary["added"]),
            len(summary["removed"]),
        )
        return {**summary, "config_path": str(self.config_path), "notes": notes}


# --- the daemon -----------------------------------------------------------------------------------

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def _late_signals_dropped() -> Iterator[None]:
    """Ignore SIGTERM, SIGINT and SIGHUP outside the daemon's signal receiver.

    The receiver re-delivers the signals it did not hand out when it closes, to the handlers
    it replaced; while the daemon finishes (pool closing, store closing) those must not kill
    it. The previous handlers are back when the daemon returns.
    """
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _check_sessions_free(config: Config) -> None:
    """Take and release every account's session lock: a session held by another process
    refuses the start before anything is written to the state directory.

    Raises:
        SessionLocked: if one is held elsewhere.
    """
    for lock in lock_sessions_of(config.accounts, config.daemon.state_dir).values():
        lock.release()


def _token(state_dir: Path) -> str:
    tpath = token_path(state_dir)
    token, created = ensure_token(tpath)
    if created:
        _log.info("token.created path=%s mode=600", tpath)
    elif not is_private(tpath):
        _log.warning("token.permissive path=%s expected_mode=600", tpath)
    return token


async def run_daemon(
    config: Config,
    *,
    config_path: Path | None = None,
    pool_factory: PoolFactory | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run mtpoold until SIGTERM or SIGINT, then shut down gracefully and return.

    Order: warnings about config/session files group or others can read -> state dir
    (0700) -> session locks checked (a session held elsewhere refuses the start before
    anything is written there) -> state store (``state_dir/state.sqlite3``; a corrupt or
    foreign file is moved aside with a warning and a fresh one started) -> ``open_pool`` with
    every account's session lock held -> bearer token (created 0600 at first start) ->
    `RpcServer` listening -> ``READY=1``.

    Signals: SIGTERM/SIGINT start a graceful shutdown (``STOPPING=1``, in-flight jobs get
    ``daemon.shutdown_grace_s``); a second one ends the grace period at once (jobs still
    running are answered SHUTTING_DOWN, see `RpcServer.stop_now`). Until the daemon has
    finished, further signals (SIGHUP included) are logged and ignored. SIGHUP, like the
    ``reload``
    method, re-reads ``config_path`` and calls ``pool.reload(new_config)`` (see `Reloader`);
    an invalid new config is logged problem by problem and the daemon keeps running on the
    old one.

    Args:
        config: The validated config.
        config_path: The file ``config`` came from, for reloads.
        pool_factory: Opens the pool (tests); default `mtpoold._compose.open_pool` with
            ``lock_sessions=True``.
        task_status: Receives the listening address once the server is listening.

    Raises:
        OSError: if the state directory, the token or the listening socket cannot be set up.
        TokenError: if the existing token file is unusable.
        SessionLocked: if another process holds an account's session (nothing was started).
        ConfigError: if an account cannot be used (e.g. its session variable is unset).
    """
    warn_about_exposed_secrets(config, config_path)
    state_dir = prepare_state_dir(Path(config.daemon.state_dir))
    if pool_factory is None:
        _check_sessions_free(config)
        pool_factory = functools.partial(open_pool, lock_sessions=True)
    store = _open_store(state_dir, config)
    try:
        with _late_signals_dropped(), trio.open_signal_receiver(*_SIGNALS) as signals:
            async with pool_factory(config, store=store) as pool:
                # Only now, with every session lock held: a daemon refused at start-up
                # leaves no token behind.
                token = _token(state_dir)
                reloader = Reloader(pool, config, config_path)
                server = RpcServer.from_config(pool, config.daemon, token=token, reloader=reloader)
                async with trio.open_nursery() as nursery:

                    async def serve(*, task_status: trio.TaskStatus[str]) -> None:
                        await server.run(task_status=task_status)
                        nursery.cancel_scope.cancel()  # graceful shutdown complete

                    address = await nursery.start(serve)
                    sd_notify(f"READY=1\nSTATUS={_summary(pool, server)}\nMAINPID={os.getpid()}")
                    _log.info(
                        "daemon.ready address=%s accounts=%d proxies=%d state_dir=%s",
                        address,
                        len(config.accounts),
                        len(config.proxies),
                        state_dir,
                    )
                    task_status.started(address)
                    nursery.start_soon(_status_loop, pool, server)
                    watchdog_s = watchdog_interval_s()
                    if watchdog_s is not None:
                        nursery.start_soon(_watchdog_loop, watchdog_s)
                    # Runs until the server has finished (then `serve` cancels it): a signal
                    # left unread would be re-delivered when the receiver closes, and
                    # SIGHUP's default action would kill the daemon in the middle of its
                    # shutdown.
                    stopping_now = False
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if server.statistics().draining:
                            if signum == signal.SIGHUP or stopping_now:
                                _log.info("daemon.signal_ignored signal=%s reason=stopping", name)
                                continue
                            # The grace period ends now; jobs still running are cancelled
                            # and answered SHUTTING_DOWN, like when it runs out.
                            _log.warning("daemon.stopping_now signal=%s", name)
                            stopping_now = True
                            server.stop_now()
                        elif signum == signal.SIGHUP:
                            _log.info("daemon.reload signal=%s", name)
                            try:
                                await reloader()
                            except ConfigError:
                                pass  # logged problem by problem; the old config stays
                        else:
                            _log.info(
                                "daemon.stopping signal=%s grace_s=%g",
                                name,
                                reloader.config.daemon.shutdown_grace_s,
                            )
                            sd_notify("STOPPING=1")
                            server.request_shutdown()
                            # Jobs still waiting for an account answer SHUTTING_DOWN now;
                            # calls already running get the grace period.
                            pool.begin_shutdown()
        _log.info("daemon.stopped")
    finally:
        store.close()
