"""The composition root: config -> state dir -> token -> store -> pool -> websocket server.

Also the process's manners: signals (SIGTERM/SIGINT graceful stop, SIGHUP reload),
sd_notify (READY, STATUS, WATCHDOG, STOPPING); its log lines are `mtpoold._logformat`'s.
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
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import cattrs
import trio

from ._compose import open_pool
from ._config import Config, ProxyConfig, load_config, proxy_key
from ._daemonfile import remove_daemon_file, write_daemon_file
from ._errors import ConfigError, redact
from ._forward import Doors, configured_accounts, rpc_address
from ._gcpause import freeze_start_up
from ._logformat import log_event
from ._metrics import metrics_registry, serve_metrics
from ._pool import ReloadSummary
from ._sdnotify import sd_notify, watchdog_interval_s
from ._secrets import warn_if_exposed
from ._server import PoolAPI, RpcServer
from ._sessionfiles import session_file_path
from ._sessionlock import SessionLocked, lock_paths_of, lock_sessions_of
from ._stats import PoolStatistics
from ._store import StateStore
from ._token import ensure_token, is_private, token_path

__all__ = [
    "DaemonPool",
    "PoolFactory",
    "Reloader",
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
        log_event(
            _log,
            logging.WARNING,
            "state_dir_permissive",
            path=str(path),
            mode=f"{mode:o}",
            expected="700",
        )
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
        log_event(_log, logging.INFO, "store_proxy_keys_migrated", rows=moved, now="proxy_name")
    return moved


def _open_store(state_dir: Path, config: Config) -> StateStore:
    store = StateStore.open(state_dir / STORE_FILE_NAME)
    try:
        migrate_proxy_keys(store, config)
    except BaseException:
        store.close()
        raise
    return store


def _cluster_metrics(pool: object, doors: Doors | None) -> Callable[[], dict[str, Any]] | None:
    """Cluster mode: the cluster's metric families' source (`mtpoold._metrics.PoolCollector`'s
    ``cluster_statistics``): the jobs forwarded by outcome, the starts that missed their
    window; one node: None."""
    cluster = getattr(pool, "cluster", None)
    if cluster is None or doors is None:
        return None
    return lambda: {"forwarded": doors.forwarded, "missed_starts": cluster.start_window.missed}


def _doors(pool: object, reloader: Reloader, token: str) -> Doors | None:
    """Cluster mode (the pool has a cluster task, ``Pool.cluster``): the server's doors
    (`mtpoold._forward`); one node: None."""
    cluster = getattr(pool, "cluster", None)
    if cluster is None:
        return None
    return Doors.for_cluster(
        cluster,
        token=token,
        accounts=configured_accounts(lambda: reloader.config),
        default_deadline_s=reloader.config.policy.job_deadline_s,
    )


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
        log_event(_log, logging.DEBUG, "status_summary_failed", exc_info=True)
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
        listening_on: The ``daemon.listen`` the daemon started with (where it listens until
            a restart, whatever later files say).
        started_with: The config the daemon started with: its ``[daemon]`` and ``[metrics]``
            sections stay in force until a restart, so a reload's notes compare with it (a
            file edited back says nothing; a second reload of a changed one says it again).
    """

    pool: DaemonPool
    config: Config
    config_path: Path | None
    listening_on: str = attrs.field(
        default=attrs.Factory(lambda self: self.config.daemon.listen, takes_self=True)
    )
    started_with: Config = attrs.field(
        default=attrs.Factory(lambda self: self.config, takes_self=True)
    )
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
                    log_event(
                        _log,
                        logging.ERROR,
                        "reload_config_invalid",
                        path=str(self.config_path),
                        problem=redact(problem, limit=None),
                    )
                log_event(
                    _log,
                    logging.ERROR,
                    "reload_rejected",
                    path=str(self.config_path),
                    keeping="current_config",
                )
                raise
            finally:
                sd_notify("READY=1")

    async def _reload(self) -> dict[str, Any]:
        if self.config_path is None:
            raise ConfigError(["the daemon was started without a config file; nothing to reload"])
        try:
            new = await trio.to_thread.run_sync(load_config, self.config_path)
        except ConfigError:
            raise
        except Exception as exc:  # a bug in reading it must not end the daemon (SIGHUP)
            log_event(_log, logging.ERROR, "reload_failed", exc_info=True)
            reason = redact(f"{type(exc).__name__}: {exc}")
            raise ConfigError([f"reload failed reading the config: {reason}"]) from None
        try:
            result = await self.pool.reload(new)
        except SessionLocked as exc:
            raise ConfigError([_held_by_own_account(exc, self.config)]) from None
        except ConfigError:
            raise
        except Exception as exc:
            log_event(_log, logging.ERROR, "reload_failed", exc_info=True)
            reason = redact(f"{type(exc).__name__}: {exc}")
            raise ConfigError([f"reload failed: {reason}"]) from None
        notes = []
        if new.daemon != self.started_with.daemon:
            if new.daemon.listen != self.listening_on:
                notes.append(
                    f"daemon.listen changed ({self.listening_on} -> {new.daemon.listen}): the"
                    f" daemon keeps listening on {self.listening_on} until it restarts"
                )
            notes.append("[daemon] settings changed: they apply after a restart")
            log_event(
                _log,
                logging.WARNING,
                "reload_daemon_changed",
                note="listen_and_limits_apply_after_restart",
            )
        for section, event, note in (
            ("metrics", "reload_metrics_changed", "metrics_listener_applies_after_restart"),
            ("cluster", "reload_cluster_changed", "cluster_settings_apply_after_restart"),
        ):
            if getattr(new, section) != getattr(self.started_with, section):
                notes.append(f"[{section}] settings changed: they apply after a restart")
                log_event(_log, logging.WARNING, event, note=note)
        self.config = new
        warn_about_exposed_secrets(new, self.config_path)
        summary: dict[str, Any] = cattrs.unstructure(result)
        log_event(
            _log,
            logging.INFO,
            "reload_done",
            path=str(self.config_path),
            generation=summary["generation"],
            accounts=len(new.accounts),
            proxies=len(new.proxies),
            added=len(summary["added"]),
            removed=len(summary["removed"]),
            reconnected=len(summary["reconnected"]),
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


def _held_by_own_account(exc: SessionLocked, config: Config) -> str:
    """The reload problem of ``exc``: when this daemon's own account of ``config`` holds the
    lock (an account renamed in one reload: its old id still holds the session), name it and
    say how to rename, rather than "in use by PID <this daemon>"."""
    if exc.holder_pid == os.getpid():
        for account in config.accounts:
            with contextlib.suppress(OSError):
                if exc.lock_path in lock_paths_of(account):
                    return str(
                        SessionLocked(
                            exc.account_id,
                            exc.session_path,
                            exc.holder_pid,
                            lock_path=exc.lock_path,
                            what=exc.what,
                            holder=(
                                f'account "{account.id}" of this daemon (PID {exc.holder_pid});'
                                " to rename an account, remove it in one reload and add it"
                                " with its new id in the next"
                            ),
                        )
                    )
    return str(exc)


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
        log_event(_log, logging.INFO, "token_created", path=str(tpath), mode="600")
    elif not is_private(tpath):
        log_event(_log, logging.WARNING, "token_permissive", path=str(tpath), expected_mode="600")
    return token


async def run_daemon(
    config: Config,
    *,
    config_path: Path | None = None,
    pool_factory: PoolFactory | None = None,
    freeze_heap: bool = False,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run mtpoold until SIGTERM or SIGINT, then shut down gracefully and return.

    Order: warnings about config/session files group or others can read -> state dir
    (0700) -> session locks checked (a session held elsewhere refuses the start before
    anything is written there) -> state store (``state_dir/state.sqlite3``; a corrupt or
    foreign file is moved aside with a warning and a fresh one started) -> ``open_pool`` with
    every account's session lock held -> bearer token (created 0600 at first start) ->
    `RpcServer` listening -> with ``[metrics]``, ``GET /metrics`` listening
    (`mtpoold._metrics.serve_metrics`, in the same nursery: it ends with the server) ->
    ``state_dir/daemon.json`` (where it listens and its pid, 0600, `mtpoold._daemonfile`;
    removed when it stops) -> ``READY=1``.

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
        freeze_heap: Once ready, freeze the process's heap out of the cyclic collector
            (`mtpoold._gcpause.freeze_start_up`): ``mtpoold run``, which owns its process.
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
        if config.cluster is None:  # cluster mode: the leases, not host-wide locks
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
                doors = _doors(pool, reloader, token)
                server = RpcServer.from_config(
                    pool, config.daemon, token=token, reloader=reloader, doors=doors
                )
                async with trio.open_nursery() as nursery:
                    if doors is not None:  # cluster mode: the peers' summaries, forwarding
                        await nursery.start(doors.run)

                    async def serve(*, task_status: trio.TaskStatus[str]) -> None:
                        await server.run(task_status=task_status)
                        nursery.cancel_scope.cancel()  # graceful shutdown complete

                    address = await nursery.start(serve)
                    cluster = getattr(pool, "cluster", None)
                    if cluster is not None:  # the registry names where this node listens
                        cluster.registry.info["rpc"] = rpc_address(str(address))
                    if config.metrics is not None:  # GET /metrics, no token (see _metrics)
                        registry = metrics_registry(
                            pool.statistics,
                            server.statistics,
                            per_account=config.metrics.per_account,
                            cluster_statistics=_cluster_metrics(pool, doors),
                        )
                        await nursery.start(serve_metrics, registry, config.metrics.listen)
                    _write_daemon_file(state_dir, address)
                    sd_notify(f"READY=1\nSTATUS={_summary(pool, server)}\nMAINPID={os.getpid()}")
                    log_event(
                        _log,
                        logging.INFO,
                        "daemon_ready",
                        address=str(address),
                        accounts=len(config.accounts),
                        proxies=len(config.proxies),
                        state_dir=str(state_dir),
                    )
                    if freeze_heap:  # no full collection walks the start-up heap again
                        freeze_start_up()
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
                                log_event(
                                    _log,
                                    logging.INFO,
                                    "daemon_signal_ignored",
                                    signal=name,
                                    reason="stopping",
                                )
                                continue
                            # The grace period ends now; jobs still running are cancelled
                            # and answered SHUTTING_DOWN, like when it runs out.
                            log_event(_log, logging.WARNING, "daemon_stopping_now", signal=name)
                            stopping_now = True
                            server.stop_now()
                        elif signum == signal.SIGHUP:
                            log_event(_log, logging.INFO, "reload_requested", via=name)
                            try:
                                await reloader()
                            except ConfigError:
                                pass  # logged problem by problem; the old config stays
                        else:
                            log_event(
                                _log,
                                logging.INFO,
                                "daemon_stopping",
                                signal=name,
                                grace_s=reloader.config.daemon.shutdown_grace_s,
                            )
                            sd_notify("STOPPING=1")
                            server.request_shutdown()
                            # Jobs still waiting for an account answer SHUTTING_DOWN now;
                            # calls already running get the grace period.
                            pool.begin_shutdown()
        log_event(_log, logging.INFO, "daemon_stopped")
    finally:
        remove_daemon_file(state_dir)
        store.close()


def _write_daemon_file(state_dir: Path, address: str) -> None:
    """``<state_dir>/daemon.json`` (`mtpoold._daemonfile`): where the client commands find
    this daemon; a failure is logged, the daemon serves on (clients fall back to the config's
    ``daemon.listen``)."""
    try:
        path = write_daemon_file(state_dir, address)
    except OSError as exc:
        log_event(_log, logging.WARNING, "daemon_file_failed", path=str(state_dir), error=str(exc))
    else:
        log_event(_log, logging.DEBUG, "daemon_file_written", path=str(path), address=address)
