"""The ``mtpoold`` command line.

Commands::

    mtpoold run [--config PATH] [--log-level LEVEL]
    mtpoold status [--json] [--watch SECONDS] [--wide] [--state S] [--proxy NAME] [--tag T]
                   [--sort KEY] [--summary]
    mtpoold jobs [--json]
    mtpoold call METHOD [ARGS_JSON] [--deadline-ms N] [--account ID]
    mtpoold reload [--json]
    mtpoold accounts list [--json]
    mtpoold accounts enable ID | disable ID [--reason R] | forget ID
    mtpoold accounts cooldowns ID | clear-cooldown ID [--class C]
    mtpoold proxies list [--json]
    mtpoold authorize [ACCOUNT_ID...] [--phone P] [--code-from FILE|-] [--password-from FILE|-]
    mtpoold check-config [PATH]
    mtpoold --version

The client commands find the daemon through the config (``--config``, ``$MTPOOLD_CONFIG`` or
``./mtpoold.toml``): ``daemon.listen`` and ``daemon.state_dir/token``. ``--url`` /
``$MTPOOLD_URL`` and ``--token-file`` / ``$MTPOOLD_TOKEN_FILE`` override them.

Exit codes: 0 ok; 1 the job failed (or the daemon failed while running, or a login failed);
2 usage or configuration error (incl. a refused token, a rejected reload, a session held by
another process); 3 daemon unreachable. Every failure prints one
human line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import signal
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import trio

from . import __version__
from ._config import Config, DaemonConfig, load_config
from ._errors import ConfigError, MtpooldError, leaves
from ._listen import bind_problem, parse_listen
from ._rpc import RpcError
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

EXIT_OK: Final = 0
EXIT_JOB_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_BROKEN_PIPE: Final = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

DEFAULT_CONFIG: Final = "mtpoold.toml"
_CONTROL_METHODS: Final = frozenset(
    {
        "resolve",
        "get_messages",
        "ping",
        "status",
        "jobs",
        "cancel",
        "accounts.disable",
        "accounts.enable",
        "accounts.cooldowns",
        "accounts.clear_cooldown",
        "accounts.forget",
        "reload",
    }
)
_USAGE_CODES: Final = frozenset({-32700, -32600, -32601, -32602, -32006})
_NO_PARAMS: Final = frozenset({"ping", "status", "jobs", "reload"})
#: ``status --sort`` keys (`mtpoold._statusview.SORT_KEYS`; not imported: rich is slow).
_STATUS_SORT_KEYS: Final = ("state", "id", "proxy", "cooldown", "failures", "last-used")
#: ``status --state`` values: `mtpoold._stats.AccountState`.
_STATUS_STATES: Final = ("idle", "connecting", "ready", "busy", "cooldown", "disabled", "retired")
DEFAULT_DISABLE_REASON: Final = "disabled by operator"


class _Fail(Exception):
    """A failure with its exit code and one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Fail(EXIT_USAGE, f"{self.prog}: {message}")


def _seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a positive finite number of seconds, not {text!r}"
        )
    return value


def _build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)  # the type add_parser(parents=...) expects
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $MTPOOLD_CONFIG or ./mtpoold.toml)",
    )
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="daemon address: ws://HOST:PORT or unix:/path"
        " (default: $MTPOOLD_URL or the config's daemon.listen)",
    )
    common.add_argument(
        "--token-file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="bearer token file (default: $MTPOOLD_TOKEN_FILE or <daemon.state_dir>/token)",
    )
    parser = _Parser(
        prog="mtpoold",
        description="Pool many Telegram user accounts through rate-gated proxies.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"mtpoold {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    status = sub.add_parser(
        "status",
        parents=[common],
        help="show proxies and accounts",
        description="A summary (jobs; accounts by state, adding up to the total), every proxy"
        " lane, then the accounts that need attention (cooling down, disabled, retired, held"
        " back by their proxy or a rate class, failing), at most 20, fitted to the terminal's"
        " width (80 columns when piped, or $COLUMNS). --state/--proxy/--tag list every"
        " matching account instead; they shape the table only (--json prints the whole reply).",
    )
    status.add_argument("--json", action="store_true", help="print the raw status JSON")
    status.add_argument(
        "--watch", type=_seconds, metavar="SECONDS", help="refresh every SECONDS (> 0)"
    )
    status.add_argument("--watch-count", type=int, default=None, help=argparse.SUPPRESS)
    status.add_argument(
        "--wide", action="store_true", help="every account and every column (not 80 columns)"
    )
    status.add_argument(
        "--state",
        action="append",
        default=[],
        choices=_STATUS_STATES,
        help="only accounts in this state (repeatable)",
    )
    status.add_argument(
        "--proxy", action="append", default=[], metavar="NAME", help="only this proxy's lane"
    )
    status.add_argument(
        "--tag", action="append", default=[], metavar="T", help="only accounts with this tag"
    )
    status.add_argument(
        "--sort",
        default="state",
        choices=_STATUS_SORT_KEYS,
        help="order of the accounts (default: state, the worst first)",
    )
    status.add_argument(
        "--summary", action="store_true", help="the summary and the proxies only (cheap)"
    )

    jobs = sub.add_parser(
        "jobs",
        parents=[common],
        help="show the jobs in flight and what each waits for",
        description="One line per job in flight, oldest first: its request (JSON-RPC id and"
        " connection), method, rate classes, age, deadline left, state (waiting_account,"
        " backoff, waiting_lane_capacity, waiting_gate, connecting, in_call, shared) and what"
        " it waits for. Never a job's arguments.",
    )
    jobs.add_argument("--json", action="store_true", help="print the raw jobs JSON")

    call = sub.add_parser(
        "call",
        parents=[common],
        help="call a method and print the JSON reply",
        description="METHOD is a TL function name (e.g. help.GetConfig, sent as invoke) or one"
        " of: " + ", ".join(sorted(_CONTROL_METHODS)) + ".",
    )
    call.add_argument("method", metavar="METHOD")
    call.add_argument("args", metavar="ARGS_JSON", nargs="?", default=None, help="a JSON object")
    call.add_argument("--deadline-ms", type=int, metavar="N", help="job deadline in milliseconds")
    call.add_argument("--account", metavar="ID", help="run on this account only")

    reload = sub.add_parser(
        "reload",
        parents=[common],
        help="make the daemon re-read its config file (like SIGHUP)",
        description="The daemon re-reads its config file. An invalid one changes nothing: every"
        " problem is printed and the daemon keeps running on the old config (exit 2).",
    )
    reload.add_argument("--json", action="store_true", help="print the raw reply")

    accounts = sub.add_parser("accounts", parents=[common], help="list and manage accounts")
    acc_sub = accounts.add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser, required=True
    )
    acc_list = acc_sub.add_parser("list", parents=[common], help="show every account")
    acc_enable = acc_sub.add_parser("enable", parents=[common], help="enable an account")
    acc_disable = acc_sub.add_parser(
        "disable", parents=[common], help="take an account out of scheduling (kept on restart)"
    )
    acc_disable.add_argument("--reason", default=DEFAULT_DISABLE_REASON, help="why, for status")
    acc_forget = acc_sub.add_parser(
        "forget",
        parents=[common],
        help="delete an orphaned account (no longer in the config) from the state store",
    )
    acc_cooldowns = acc_sub.add_parser(
        "cooldowns",
        parents=[common],
        help="show an account's cooldowns (account-wide, per rate class) and budgets left",
    )
    acc_clear = acc_sub.add_parser(
        "clear-cooldown",
        parents=[common],
        help="lift an account's FLOOD_WAIT cooldowns (all, or one rate class with --class)",
    )
    acc_clear.add_argument(
        "--class", dest="rate_class", default=None, metavar="C", help="only this rate class"
    )
    for action in (acc_enable, acc_disable, acc_forget, acc_cooldowns, acc_clear):
        action.add_argument("id", metavar="ID", help="account id")
    for action in (acc_list, acc_enable, acc_disable, acc_forget, acc_cooldowns, acc_clear):
        action.add_argument("--json", action="store_true", help="print the raw reply")

    proxies = sub.add_parser("proxies", parents=[common], help="list proxies")
    proxy_sub = proxies.add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser, required=True
    )
    proxy_list = proxy_sub.add_parser("list", parents=[common], help="show every proxy lane")
    proxy_list.add_argument("--json", action="store_true", help="print the raw reply")

    authorize = sub.add_parser(
        "authorize",
        parents=[common],
        help="log accounts in and write their session files",
        description="Log accounts in through their own proxy and server settings and write"
        " their session files (0600). Asks for the phone number, the login code and the 2FA"
        " password (without echo) unless given by the options. Refused while the daemon"
        " holds the session (exit 2).",
    )
    authorize.add_argument(
        "accounts",
        metavar="ACCOUNT_ID",
        nargs="*",
        help="default: every account with a session file",
    )
    authorize.add_argument(
        "--phone", help="the phone number, international format (one account only)"
    )
    authorize.add_argument(
        "--force",
        action="store_true",
        help="log in again even if the session file already holds a login (replaces it)",
    )
    authorize.add_argument(
        "--code-from", metavar="FILE", help="read the login code from FILE ('-': stdin)"
    )
    authorize.add_argument(
        "--password-from", metavar="FILE", help="read the 2FA password from FILE ('-': stdin)"
    )

    check = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate a config file",
        description="Validate PATH (default: --config, $MTPOOLD_CONFIG or ./mtpoold.toml) and"
        " run the daemon's start-up checks on it.",
    )
    check.add_argument("path", metavar="PATH", nargs="?", default=None)
    return parser


# --- finding the daemon ---------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> tuple[Path, bool]:
    """The config path and whether it was asked for explicitly."""
    explicit = getattr(args, "config", None) or os.environ.get("MTPOOLD_CONFIG")
    return Path(explicit or DEFAULT_CONFIG), bool(explicit)


def _load_config(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise _config_fail(path, exc) from None


def _daemon_address(path: Path, *, quiet: bool) -> tuple[str, Path]:
    """``daemon.listen`` and ``daemon.state_dir`` of the config at ``path``.

    A config that does not validate (the operator is editing it, and will ask the running
    daemon to ``reload`` it) still names its daemon: the two keys are read leniently from the
    raw TOML, ``state_dir`` made absolute against the config's directory as `load_config`
    does, and a note goes to stderr (except for ``reload``, whose reply lists the problems).

    Raises:
        _Fail: (exit 2, every problem) if not even those two keys can be read.
    """

    try:
        config = load_config(path)
    except ConfigError as exc:
        failure = _config_fail(path, exc)
    else:
        return config.daemon.listen, Path(config.daemon.state_dir)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise failure from None
    daemon = raw.get("daemon", {})
    if not isinstance(daemon, dict):
        raise failure
    defaults = DaemonConfig()
    listen = daemon.get("listen", defaults.listen)
    state_dir = daemon.get("state_dir", defaults.state_dir)
    if not isinstance(listen, str) or not isinstance(state_dir, str) or not state_dir.strip():
        raise failure
    if not quiet:
        n = failure.message.count("\n") + 1
        print(
            f"mtpoold: note: {path} has {n} problem{'s' if n != 1 else ''}"
            " (mtpoold check-config lists them); reaching the daemon at its daemon.listen",
            file=sys.stderr,
        )
    return listen, path.resolve().parent / Path(state_dir).expanduser()


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
        if explicit or path.exists():
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
    args: argparse.Namespace, method: str, params: dict[str, Any] | None, *, timeout_s: float
) -> Any:
    from ._rpcclient import AuthRejected, DaemonUnreachable, call

    target, token = _locate(args)
    try:
        return trio.run(lambda: call(target, token, method, params, timeout_s=timeout_s))
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
    path = Path(args.path) if args.path is not None else _config_path(args)[0]
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
    from ._daemon import configure_logging, run_daemon

    path, _ = _config_path(args)
    config = _load_config(path)
    problems = _startup_problems(config)  # exit 2 before anything is created or started
    if problems:
        raise _Fail(EXIT_USAGE, "\n".join(f"{path}: {p}" for p in problems))
    configure_logging(args.log_level)
    # Whatever the daemon creates (sessions, their journals, the state store, locks) is
    # private to its user, whatever umask it was started with.
    os.umask(0o077)
    # While the daemon runs, its signal receiver takes SIGHUP (reload); before and after, a
    # SIGHUP (a closed terminal, a late `systemctl reload`) must not kill the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        trio.run(lambda: run_daemon(config, config_path=path))
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


def _cmd_call(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.args is not None:
        try:
            params = json.loads(args.args)
        except json.JSONDecodeError as exc:
            problem = f"ARGS_JSON is not valid JSON: {exc.msg} (column {exc.colno})"
            raise _Fail(EXIT_USAGE, problem) from None
        if not isinstance(params, dict):
            raise _Fail(EXIT_USAGE, 'ARGS_JSON must be a JSON object, e.g. \'{"peer": "durov"}\'')
    options: dict[str, Any] = {}
    if args.deadline_ms is not None:
        if args.deadline_ms <= 0:
            raise _Fail(EXIT_USAGE, "--deadline-ms must be > 0")
        options["deadline_ms"] = args.deadline_ms
    if args.account is not None:
        options["account"] = args.account
    method = args.method
    if method in _CONTROL_METHODS:
        if options and method in ("resolve", "get_messages"):
            params = {**params, "options": {**params.get("options", {}), **options}}
        elif options:
            raise _Fail(EXIT_USAGE, f"--deadline-ms/--account do not apply to {method}")
        request: dict[str, Any] | None = params if params or method not in _NO_PARAMS else None
    else:
        method, request = "invoke", {"method": args.method, "args": params}
        if options:
            request["options"] = options
    timeout_s = (args.deadline_ms / 1000 if args.deadline_ms else 600.0) + 15.0
    try:
        result = _request(args, method, request, timeout_s=timeout_s)
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

            _console().print(render_accounts(stats))
        return EXIT_OK
    if args.action == "disable":
        result = _control(args, "accounts.disable", {"id": args.id, "reason": args.reason})
        text = f"account {args.id} disabled: {args.reason}"
    elif args.action == "enable":
        result = _control(args, "accounts.enable", {"id": args.id})
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
        cleared = ", ".join(result.get("cleared") or []) or "nothing was cooling down"
        text = f"account {args.id}: cleared {cleared}"
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

    path, _ = _config_path(args)
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
    parser = _build_parser()
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
