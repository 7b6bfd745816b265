"""The ``mtpoold`` command line.

Commands (the grammar, help texts and exit codes: `mtpoold._cliparser`)::

    mtpoold run [--config PATH] [--log-level LEVEL] [--log-format logfmt|json]
    mtpoold status [--json] [--watch SECONDS] [--wide] [--state S] [--proxy NAME] [--tag T]
                   [--sort KEY] [--summary]
    mtpoold jobs [--json]
    mtpoold call METHOD [ARGS_JSON] [--deadline-ms N] [--account ID] [--tags T[,T...]]
    mtpoold reload [--json]
    mtpoold accounts list [--json]
    mtpoold accounts enable ID [--force] | disable ID [--reason R] | forget ID
    mtpoold accounts cooldowns ID | clear-cooldown ID [--class C]
    mtpoold proxies list [--json]
    mtpoold authorize [ACCOUNT_ID...] [--phone P] [--code-from FILE|-] [--password-from FILE|-]
    mtpoold check-config [PATH]
    mtpoold --version

The client commands (status, call, reload, accounts, proxies) find the daemon through the
config (``--config``, ``$MTPOOLD_CONFIG`` or ``./mtpoold.toml``): where the daemon running
on its ``daemon.state_dir`` listens (``state_dir/daemon.json``, `mtpoold._daemonfile`), else
its ``daemon.listen``; the token in ``daemon.state_dir/token``. ``--url`` / ``$MTPOOLD_URL``
and ``--token-file`` / ``$MTPOOLD_TOKEN_FILE`` override them; with both given no config file
is needed, without them and without a config file they exit 2 ("no config file: ...").

Exit codes: 0 ok; 1 the job failed (or the daemon failed while running, or a login failed);
2 usage or configuration error (incl. no config file, a refused token, a rejected reload, a
session held by another process); 3 daemon unreachable; 141 the reader of stdout went away
(silently). Every failure prints one human line per problem on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import trio

from ._cliparser import (
    CONTROL_METHODS,
    DEFAULT_DISABLE_REASON,
    EXIT_BROKEN_PIPE,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliFailure,
    build_parser,
)
from ._config import Config, DaemonConfig, load_config
from ._daemonfile import daemon_location
from ._errors import ConfigError, MtpooldError, leaves
from ._listen import bind_problem, parse_listen
from ._logformat import configure_logging
from ._rpc import MAX_DEADLINE_MS, MAX_INT_DIGITS, RpcError
from ._sessionlock import SessionLocked
from ._token import TokenError, read_token, token_path

# Imported where used, each because `mtpoold --help` / `status` need not pay for it (measured
# with ``python -X importtime -m mtpoold --help``, after the package itself):
# `_client`, `_authorize`: Telethon, ~520 ms (`run`, `check-config`, `authorize` only);
# `_daemon`, `_rpcclient`: trio-websocket, ~80 ms (not for --help);
# `_statusview`: rich, ~55 ms (the human tables only).
if TYPE_CHECKING:
    from rich.console import Console

    from ._rpcclient import Target

__all__ = ["entry", "main"]

_Fail = CliFailure  # the commands' short name for it
DEFAULT_CONFIG: Final = "mtpoold.toml"
_USAGE_CODES: Final = frozenset({-32700, -32600, -32601, -32602, -32006})
_NO_PARAMS: Final = frozenset({"ping", "status", "jobs", "reload"})
_JOB_METHODS: Final = frozenset({"resolve", "get_messages"})


# --- finding the daemon ---------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> tuple[Path, bool]:
    """The config path and whether it was asked for explicitly.

    Raises:
        _Fail: (exit 2) for two different ``--config`` paths (before and after the command).
    """
    given = [p for p in (getattr(args, "global_config", None), getattr(args, "config", None)) if p]
    if len(set(given)) > 1:
        raise _Fail(EXIT_USAGE, f"mtpoold: two config paths ({given[0]}, {given[1]}); give one")
    explicit = (given[0] if given else None) or os.environ.get("MTPOOLD_CONFIG")
    return Path(explicit or DEFAULT_CONFIG), bool(explicit)


def _no_config_file(path: Path, *, client: bool) -> _Fail:
    """The failure of a command that needs a config and finds none where none was asked for."""
    ways = "give --config or set $MTPOOLD_CONFIG"
    if client:
        ways = "give --config, set $MTPOOLD_CONFIG, or --url and --token-file"
    return _Fail(EXIT_USAGE, f"no config file: ./{path} does not exist ({ways})")


def _existing_config(args: argparse.Namespace) -> Path:
    """`_config_path` for the commands that need the file (run, authorize).

    Raises:
        _Fail: (exit 2) "no config file" when none was asked for and ./mtpoold.toml is absent.
    """
    path, explicit = _config_path(args)
    if not explicit and not path.exists():
        raise _no_config_file(path, client=False)
    return path


def _load_config(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise _config_fail(path, exc) from None


def _daemon_address(path: Path, *, quiet: bool) -> tuple[str, Path]:
    """Where the daemon of the config at ``path`` listens and its ``state_dir``
    (`mtpoold._daemonfile.daemon_location`: ``daemon.json`` first while the daemon runs, the
    file's two keys read leniently when it does not validate). A note goes to stderr for an
    invalid file (except for ``reload``, whose reply lists the problems).

    Raises:
        _Fail: (exit 2, every problem) if not even those two keys can be read.
    """
    try:
        where = daemon_location(path)
    except ConfigError as exc:
        raise _config_fail(path, exc) from None
    if where.problems is not None and not quiet:
        n = len(where.problems.problems)
        print(
            f"mtpoold: note: {path} has {n} problem{'s' if n != 1 else ''}"
            " (mtpoold check-config lists them); reaching the daemon by its daemon.listen"
            " and state_dir",
            file=sys.stderr,
        )
    return where.listen, where.state_dir


def _config_fail(path: Path, exc: ConfigError) -> _Fail:
    lines = [p if p.startswith(str(path)) else f"{path}: {p}" for p in exc.problems]
    return _Fail(EXIT_USAGE, "\n".join(lines))


def _startup_problems(config: Config) -> list[str]:
    """Every check ``run`` makes before it starts anything, and ``check-config`` with it.

    The state directory exists or can be created (`state_dir_problem`); ``daemon.listen``
    parses with the server's own parser and can be bound now (`bind_problem`); and
    `telethon_client_factory`'s: every session source readable, a Telethon session holding
    an auth key, no two accounts on one auth key (`mtpoold._sessionid.session_problems`),
    RSA keys, servers and proxies expressible to Telethon.
    """
    from ._client import telethon_client_factory
    from ._daemon import state_dir_problem

    problems: list[str] = []
    state_dir = state_dir_problem(Path(config.daemon.state_dir))
    if state_dir is not None:
        problems.append(state_dir)
    # The address parses (DaemonConfig's invariant, the same parser); can it be bound now?
    if (bind := bind_problem(parse_listen(config.daemon.listen))) is not None:
        problems.append(f"daemon.listen: {bind}")
    try:
        telethon_client_factory(config)
    except ConfigError as exc:
        problems += exc.problems
    return problems


def _locate(args: argparse.Namespace) -> tuple[Target, str]:
    """Return the daemon target and the token, from flags, environment and config."""
    from ._rpcclient import parse_target, target_from_listen

    url = getattr(args, "url", None) or os.environ.get("MTPOOLD_URL")
    token_file = getattr(args, "token_file", None) or os.environ.get("MTPOOLD_TOKEN_FILE")
    defaults = DaemonConfig()
    listen, state_dir = defaults.listen, Path(defaults.state_dir)
    if url is None or token_file is None:
        path, explicit = _config_path(args)
        if not explicit and not path.exists():
            raise _no_config_file(path, client=True)
        # The daemon running on this state_dir listens where it started, whatever the file
        # says now (daemon.listen applies after a restart): daemon.json first.
        listen, state_dir = _daemon_address(path, quiet=args.command == "reload")
    try:
        target = parse_target(url) if url is not None else target_from_listen(listen)
    except ValueError as exc:
        raise _Fail(EXIT_USAGE, f"bad daemon address: {exc}") from None
    if token_file is None:
        token_file = str(token_path(state_dir))
    try:
        token = read_token(Path(token_file))
    except TokenError as exc:
        raise _Fail(EXIT_USAGE, f"{exc}; pass --token-file or set MTPOOLD_TOKEN_FILE") from None
    return target, token


def _request(
    args: argparse.Namespace,
    method: str,
    params: dict[str, Any] | None,
    *,
    timeout_s: float,
    progress: bool = False,
) -> Any:
    """One JSON-RPC request to the daemon; with ``progress``, `show_waiting` on stderr while
    it runs (written only when stderr is a terminal)."""
    from ._rpcclient import AuthRejected, DaemonUnreachable, call

    target, token = _locate(args)

    async def request() -> Any:
        if not progress:
            return await call(target, token, method, params, timeout_s=timeout_s)
        from . import _cliprogress

        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    _cliprogress.show_waiting,
                    sys.stderr,
                    after_s=_cliprogress.PROGRESS_AFTER_S,
                    every_s=_cliprogress.PROGRESS_EVERY_S,
                )
            )
            answer: Any = None
            failure: Exception | None = None
            try:
                answer = await call(target, token, method, params, timeout_s=timeout_s)
            except Exception as exc:  # leaves the nursery as it is, not in an ExceptionGroup
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return answer

    try:
        return trio.run(request)
    except DaemonUnreachable as exc:
        raise _Fail(EXIT_UNREACHABLE, f"daemon unreachable: {exc}") from None
    except AuthRejected as exc:
        hint = " (wrong token? see --token-file)" if exc.status == 401 else ""
        raise _Fail(EXIT_USAGE, f"{exc}{hint}") from None


# --- commands -------------------------------------------------------------------------------------


def _answers_as_our_daemon(config: Config) -> bool:
    """Whether the mtpoold of this config's state directory answers ``ping`` at its listen
    address (token from ``<state_dir>/token``), within 2 s."""
    from ._rpcclient import AuthRejected, DaemonUnreachable, call, target_from_listen

    try:
        target = target_from_listen(config.daemon.listen)
        token = read_token(token_path(Path(config.daemon.state_dir)))
        trio.run(lambda: call(target, token, "ping", None, timeout_s=2.0))
    except (ValueError, TokenError, DaemonUnreachable, AuthRejected, RpcError, OSError):
        return False
    return True


def _cmd_check_config(args: argparse.Namespace) -> int:
    path, explicit = _config_path(args)
    if args.path is not None:
        flag = getattr(args, "config", None) or getattr(args, "global_config", None)
        if flag is not None and Path(flag) != Path(args.path):
            raise _Fail(
                EXIT_USAGE,
                f"mtpoold check-config: two config paths (--config {flag}, PATH {args.path});"
                " give one",
            )
        path = Path(args.path)
    elif not explicit and not path.exists():
        raise _no_config_file(path, client=False)
    config = _load_config(path)
    problems = _startup_problems(config)
    note = ""
    in_use = [p for p in problems if p.startswith("daemon.listen:") and "in use" in p]
    if in_use and _answers_as_our_daemon(config):
        # The operator checks a config for the daemon that runs on it (before `reload`):
        # the address is this daemon's own, not a conflict.
        problems = [p for p in problems if p not in in_use]
        note = " (in use by the running mtpoold of this state_dir; `mtpoold reload` applies it)"
    if problems:
        raise _Fail(EXIT_USAGE, "\n".join(f"{path}: {p}" for p in problems))
    d = config.daemon
    print(
        f"{path}: ok: {len(config.accounts)} accounts, {len(config.proxies)} proxies,"
        f" listen {d.listen}{note}, state_dir {d.state_dir}"
    )
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from ._daemon import run_daemon

    path = _existing_config(args)
    config = _load_config(path)
    problems = _startup_problems(config)  # exit 2 before anything is created or started
    if problems:
        raise _Fail(EXIT_USAGE, "\n".join(f"{path}: {p}" for p in problems))
    configure_logging(args.log_level, args.log_format)
    # Whatever the daemon creates (sessions, their journals, the state store, locks) is
    # private to its user, whatever umask it was started with.
    os.umask(0o077)
    # While the daemon runs, its signal receiver takes SIGHUP (reload); before and after, a
    # SIGHUP (a closed terminal, a late `systemctl reload`) must not kill the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        trio.run(lambda: run_daemon(config, config_path=path, freeze_heap=True))
    except (OSError, TokenError, MtpooldError, BaseExceptionGroup) as exc:
        # Startup failures arrive wrapped in the pool's and the server's nurseries.
        for leaf in leaves(exc):
            if isinstance(leaf, SessionLocked):
                raise _Fail(EXIT_USAGE, f"mtpoold run: {leaf}") from None
            if isinstance(leaf, ConfigError):
                raise _Fail(EXIT_USAGE, "\n".join(f"{path}: {p}" for p in leaf.problems)) from None
            if isinstance(leaf, OSError | TokenError):
                raise _Fail(EXIT_JOB_FAILED, f"daemon failed: {leaf}") from None
        raise
    return EXIT_OK


def _console() -> Console:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would raise SystemExit(1); `main` exits 141 like every other command
            raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")

    # Piped output (files, tests, `watch`) gets wide tables rather than wrapped cells.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return _Console(width=200) if wide else _Console()


def _status_console(*, wide: bool) -> Console:
    """The console of ``status`` and ``jobs``: the terminal's width, else ``$COLUMNS``, else
    80 columns (piped output fits a terminal too); ``wide``: at least 240."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would raise SystemExit(1); `main` exits 141 like every other command
            raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")

    width = 80
    if sys.stdout.isatty():
        width = _Console().width
    elif (columns := os.environ.get("COLUMNS", "")).isdigit() and int(columns) > 0:
        width = int(columns)
    return _Console(width=max(width, 240) if wide else width)


def _cmd_status(args: argparse.Namespace) -> int:
    from ._statusview import AccountFilter, render_status

    console = _status_console(wide=args.wide)
    only = AccountFilter(states=args.state, proxies=args.proxy, tags=args.tag)
    params = {"summary": True} if args.summary else None
    count = 0
    while True:
        try:
            stats = _request(args, "status", params, timeout_s=10.0)
        except _Fail as fail:
            if args.watch is None or fail.code != EXIT_UNREACHABLE:
                raise
            stats, problem = None, fail.message
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=True))
        else:
            if args.watch is not None:
                console.clear()
            if stats is None:
                console.print(problem, style="red", markup=False)
            else:
                console.print(render_status(stats, wide=args.wide, only=only, sort=args.sort))
        count += 1
        if args.watch is None or (args.watch_count is not None and count >= args.watch_count):
            return EXIT_OK
        trio.run(trio.sleep, args.watch)


def _cmd_jobs(args: argparse.Namespace) -> int:
    reply = _control(args, "jobs", None)
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
        return EXIT_OK
    from ._statusview import render_jobs

    _status_console(wide=False).print(render_jobs(reply))
    return EXIT_OK


class _NotJsonNumber(ValueError):
    """A number `json.loads` reads but JSON cannot carry to the daemon."""


def _json_constant(name: str) -> Any:
    raise _NotJsonNumber(f"{name} is not a JSON number")


def _json_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise _NotJsonNumber(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJsonNumber(
            f"{text[:20]}{'…' if len(text) > 20 else ''} is beyond the range of a double"
        )
    return value


def _read_args_json(text: str) -> Any:
    """``ARGS_JSON`` of ``mtpoold call`` as the daemon would read it.

    Raises:
        _Fail: EXIT_USAGE (2) naming ARGS_JSON for text that is not JSON, and for numbers the
            request could not carry: NaN, Infinity, a number beyond a double (``1e400``), an
            integer of more than `MAX_INT_DIGITS` digits (Python's int/str limit). The rule:
            shared case 002, every numeric parameter of any size is a usage error, never an
            internal one.
    """
    try:
        return json.loads(
            text, parse_constant=_json_constant, parse_int=_json_int, parse_float=_json_float
        )
    except json.JSONDecodeError as exc:
        problem = f"ARGS_JSON is not valid JSON: {exc.msg} (column {exc.colno})"
    except _NotJsonNumber as exc:
        problem = f"ARGS_JSON cannot be sent: {exc}"
    except RecursionError:
        problem = "ARGS_JSON is not valid JSON: nested too deeply"
    raise _Fail(EXIT_USAGE, problem)


def _cmd_call(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.args is not None:
        params = _read_args_json(args.args)
        if not isinstance(params, dict):
            raise _Fail(EXIT_USAGE, 'ARGS_JSON must be a JSON object, e.g. \'{"peer": "durov"}\'')
    options: dict[str, Any] = {}
    if args.deadline_ms is not None:
        if args.deadline_ms <= 0:
            raise _Fail(EXIT_USAGE, "--deadline-ms must be > 0")
        options["deadline_ms"] = args.deadline_ms
    if args.account is not None:
        options["account"] = args.account
    if args.tags is not None:
        options["tags"] = list(args.tags)
    method = args.method
    if method == "cancel":
        raise _Fail(
            EXIT_USAGE,
            "mtpoold call: cancel names a job of the same websocket connection, which a one-shot"
            " command never has; Ctrl-C ends the job of `mtpoold call`",
        )
    if method in CONTROL_METHODS:
        if options and method in _JOB_METHODS:
            params = {**params, "options": {**params.get("options", {}), **options}}
        elif options:
            raise _Fail(EXIT_USAGE, f"--deadline-ms/--account/--tags do not apply to {method}")
        request: dict[str, Any] | None = params if params or method not in _NO_PARAMS else None
    else:
        method, request = "invoke", {"method": args.method, "args": params}
        if options:
            request["options"] = options
    # the daemon refuses a deadline over 2**53 ms (INVALID_ARGUMENT naming it); capped here
    # only so that a 400-digit one does not overflow the float of our own wait (case 002)
    deadline_ms = min(args.deadline_ms, MAX_DEADLINE_MS) if args.deadline_ms else None
    timeout_s = (deadline_ms / 1000 if deadline_ms else 600.0) + 15.0
    try:
        progress = method == "invoke" or method in _JOB_METHODS
        result = _request(args, method, request, timeout_s=timeout_s, progress=progress)
    except RpcError as err:
        print(json.dumps({"error": err.to_object()}, indent=2, ensure_ascii=False))
        code = EXIT_USAGE if err.code in _USAGE_CODES else EXIT_JOB_FAILED
        raise _Fail(code, f"{args.method} failed: {err}") from None
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return EXIT_OK


def _control(args: argparse.Namespace, method: str, params: dict[str, Any] | None) -> Any:
    """One control request; an error reply becomes a `_Fail` (2 for usage, 1 otherwise)."""

    try:
        return _request(args, method, params, timeout_s=60.0)
    except RpcError as err:
        code = EXIT_USAGE if err.code in _USAGE_CODES else EXIT_JOB_FAILED
        lines = [f"mtpoold: {method} failed: {err.message}"]
        if err.problems:
            lines = [f"mtpoold: {method} failed; the daemon keeps its current config:"]
            lines += [f"  {p}" for p in err.problems]
        raise _Fail(code, "\n".join(lines)) from None


def _cmd_reload(args: argparse.Namespace) -> int:
    if args.json:
        try:
            result = _request(args, "reload", None, timeout_s=60.0)
        except RpcError as err:
            print(json.dumps({"error": err.to_object()}, indent=2, sort_keys=True))
            code = EXIT_USAGE if err.code in _USAGE_CODES else EXIT_JOB_FAILED
            raise _Fail(code, f"mtpoold: reload failed: {err.message}") from None
        print(json.dumps(result, indent=2, sort_keys=True))
        return EXIT_OK
    result = _control(args, "reload", None)

    def ids(key: str) -> str:
        return ", ".join(map(str, result.get(key) or ())) or "-"

    print(
        f"reloaded {result.get('config_path')}: config #{result.get('generation')};"
        f" added {ids('added')}; removed {ids('removed')}; reconnected {ids('reconnected')}"
    )
    for note in result.get("notes") or ():
        print(f"note: {note}")
    return EXIT_OK


def _cmd_accounts(args: argparse.Namespace) -> int:
    if args.action == "list":
        stats = _control(args, "status", None)
        if args.json:
            out = {k: stats.get(k) for k in ("accounts", "orphaned_accounts")}
            print(json.dumps(out, indent=2, sort_keys=True))
        else:
            from ._statusview import render_accounts

            # every column, like `status --wide`: fitted to 80 columns its ids were "acc…"
            _status_console(wide=True).print(render_accounts(stats))
        return EXIT_OK
    if args.action == "disable":
        disable: dict[str, object] = {"id": args.id}
        if args.reason is not None:
            disable["reason"] = args.reason
        result = _control(args, "accounts.disable", disable)
        # the daemon answers with the reason in force (an existing one is kept without --reason)
        text = f"account {args.id} disabled: {result.get('reason') or DEFAULT_DISABLE_REASON}"
    elif args.action == "enable":
        enable: dict[str, object] = {"id": args.id}
        if args.force:
            enable["force"] = True
        result = _control(args, "accounts.enable", enable)
        text = f"account {args.id} enabled"
    elif args.action == "cooldowns":
        result = _control(args, "accounts.cooldowns", {"id": args.id})
        if not args.json:
            from ._statusview import render_cooldowns

            _console().print(render_cooldowns(result))
            return EXIT_OK
        text = ""
    elif args.action == "clear-cooldown":
        params: dict[str, object] = {"id": args.id}
        if args.rate_class is not None:
            params["rate_class"] = args.rate_class
        result = _control(args, "accounts.clear_cooldown", params)
        cleared = ", ".join(result.get("cleared") or [])
        text = (
            f"account {args.id}: cleared {cleared}"
            if cleared
            else f"account {args.id}: nothing to clear (no cooldown of its own or of a rate"
            " class; a proxy's cooldown is the proxy's)"
        )
    else:
        result = _control(args, "accounts.forget", {"id": args.id})
        text = f"account {args.id} forgotten: its row was deleted from the state store"
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else text)
    return EXIT_OK


def _cmd_proxies(args: argparse.Namespace) -> int:
    stats = _control(args, "status", None)
    if args.json:
        print(json.dumps({"proxies": stats.get("proxies")}, indent=2, sort_keys=True))
    else:
        from ._statusview import render_proxies

        _console().print(render_proxies(stats))
    return EXIT_OK


def _cmd_authorize(args: argparse.Namespace) -> int:
    from ._authorize import AuthorizeFailed, authorize_accounts

    path = _existing_config(args)
    config = _load_config(path)
    os.umask(0o077)
    try:
        authorize_accounts(
            config,
            args.accounts,
            phone=args.phone,
            code_from=args.code_from,
            password_from=args.password_from,
            force=args.force,
        )
    except SessionLocked as exc:
        raise _Fail(EXIT_USAGE, f"mtpoold authorize: {exc}; stop the daemon first") from None
    except AuthorizeFailed as exc:
        raise _Fail(exc.exit_code, f"mtpoold authorize: {exc}") from None
    except ConfigError as exc:
        raise _Fail(EXIT_USAGE, "\n".join(f"{path}: {p}" for p in exc.problems)) from None
    return EXIT_OK


_COMMANDS: Final = {
    "run": _cmd_run,
    "status": _cmd_status,
    "jobs": _cmd_jobs,
    "call": _cmd_call,
    "reload": _cmd_reload,
    "accounts": _cmd_accounts,
    "proxies": _cmd_proxies,
    "authorize": _cmd_authorize,
    "check-config": _cmd_check_config,
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``mtpoold`` command line.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 ok, 1 job (or daemon) failed, 2 usage/config error, 3 daemon
        unreachable. Failures print one line per problem on stderr, never a traceback.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        if args.command is None:
            parser.print_usage(sys.stderr)
            raise _Fail(
                EXIT_USAGE,
                "mtpoold: a command is required (run, status, jobs, call, reload, accounts,"
                " proxies, authorize, check-config)",
            )
        return _COMMANDS[args.command](args)
    except _Fail as fail:
        print(fail.message, file=sys.stderr)
        return fail.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mtpoold ... | head`: the reader left; leave quietly
        return _broken_pipe()
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except Exception as exc:  # a bug: still one line, unless asked for the traceback
        if isinstance(exc, BaseExceptionGroup) and all(
            isinstance(leaf, BrokenPipeError) for leaf in leaves(exc)
        ):
            return _broken_pipe()
        if os.environ.get("MTPOOLD_DEBUG"):
            raise
        message = f"mtpoold: internal error: {type(exc).__name__}: {exc}"
        print(f"{message} (MTPOOLD_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_JOB_FAILED
    except BaseExceptionGroup as group:  # Ctrl-C while `call` showed its progress
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves(group)):
            return 130
        raise


def _broken_pipe() -> int:
    """Exit like other CLIs whose reader went away: no message, status 128 + SIGPIPE."""
    try:  # the interpreter flushes stdout at exit: point it at /dev/null so that stays quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def entry() -> NoReturn:
    """Console-script entry point: ``sys.exit(main())``."""
    sys.exit(main())
