"""The ``mtpoold`` command line's grammar: commands, options, help texts and exit codes.

`build_parser` makes the `argparse` parser `mtpoold._cli.main` runs. Every command's
``--help`` has a description, examples and the exit codes that command can return
(`EXIT_CODES` holds the meaning of each). Options sit where they apply:

* ``--config`` on every command (the daemon's and the client commands' way to the config);
* client options, ``--url`` and ``--token-file``, on the commands that talk to a running
  daemon (`CLIENT_COMMANDS`);
* server options (``--log-level``) on ``run`` only.

Parse errors raise `CliFailure` (exit 2, one line) instead of argparse's exit.
"""

from __future__ import annotations

import argparse
import math
import textwrap
from typing import Final, NoReturn

from . import __version__
from ._logformat import LOG_FORMATS

__all__ = [
    "CLIENT_COMMANDS",
    "CONTROL_METHODS",
    "DEFAULT_DISABLE_REASON",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CliFailure",
    "build_parser",
]

EXIT_OK: Final = 0
EXIT_JOB_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_BROKEN_PIPE: Final = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

#: What each exit code means, for every command's ``--help`` and the README.
EXIT_CODES: Final[dict[int, str]] = {
    EXIT_OK: "ok",
    EXIT_JOB_FAILED: "the job failed (or the daemon failed while running, or a login failed)",
    EXIT_USAGE: "usage or configuration error (no config file, a refused token, a rejected"
    " reload, a session held by another process)",
    EXIT_UNREACHABLE: "daemon unreachable",
    EXIT_BROKEN_PIPE: "the reader of the output went away (`mtpoold status | head`), silently",
}

#: The JSON-RPC methods ``call`` sends by name; any other METHOD is a TL function (``invoke``).
#: Not ``cancel``: it names a job of the same websocket connection, which a one-shot command
#: never has (Ctrl-C ends its job).
CONTROL_METHODS: Final = frozenset(
    {
        "resolve",
        "get_messages",
        "ping",
        "status",
        "jobs",
        "accounts.disable",
        "accounts.enable",
        "accounts.cooldowns",
        "accounts.clear_cooldown",
        "accounts.forget",
        "reload",
    }
)
#: The commands that talk to a running daemon (and take ``--url`` / ``--token-file``).
CLIENT_COMMANDS: Final = frozenset({"status", "jobs", "call", "reload", "accounts", "proxies"})
#: ``status --sort`` keys (`mtpoold._statusview.SORT_KEYS`; not imported: rich is slow).
STATUS_SORT_KEYS: Final = ("state", "id", "proxy", "cooldown", "failures", "last-used")
#: ``status --state`` values: `mtpoold._stats.AccountState`.
STATUS_STATES: Final = (
    "idle",
    "connecting",
    "ready",
    "busy",
    "cooldown",
    "disabled",
    "retired",
    "remote",
)
DEFAULT_DISABLE_REASON: Final = "disabled by operator"


class CliFailure(Exception):
    """A failure with its exit code and its message (one line per problem) for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliFailure(EXIT_USAGE, f"{self.prog}: {message}")


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


WATCH_MIN_S = 0.1
"""The shortest ``status --watch`` interval (s): below it the CLI would redraw in a tight
loop and load the daemon for nothing (a screen refresh a human can read)."""


def _watch_seconds(text: str) -> float:
    """An argparse type: a `_seconds` value of at least `WATCH_MIN_S` (s)."""
    value = _seconds(text)
    if value < WATCH_MIN_S:
        raise argparse.ArgumentTypeError(f"must be at least {WATCH_MIN_S:g} s, not {text!r}")
    return value


def _tags(text: str) -> tuple[str, ...]:
    """An argparse type: ``T[,T…]``, each tag non-empty."""
    tags = tuple(t.strip() for t in text.split(","))
    if not all(tags):
        raise argparse.ArgumentTypeError(f"expected TAG[,TAG...] with no empty tag, not {text!r}")
    return tags


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps the description; keeps the epilog's lines (examples, exit codes) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "\n".join(indent + line for line in text.splitlines())
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent)


def _epilog(examples: list[str], codes: dict[int, str] | None = None) -> str:
    """``examples:`` and ``exit codes:`` blocks for a command's ``--help``."""
    lines = ["examples:", *(f"  {e}" for e in examples), "", "exit codes:"]
    for code, meaning in (codes or {c: EXIT_CODES[c] for c in (0, 2)}).items():
        lines += textwrap.wrap(
            meaning, 78, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7
        )
    return "\n".join(lines)


#: The exit codes of a command that talks to the daemon.
_CLIENT_CODES: Final = {
    EXIT_OK: EXIT_CODES[EXIT_OK],
    EXIT_USAGE: "usage error, no config file, or the daemon refused the token or request",
    EXIT_UNREACHABLE: EXIT_CODES[EXIT_UNREACHABLE],
    EXIT_BROKEN_PIPE: EXIT_CODES[EXIT_BROKEN_PIPE],
}


def _options() -> tuple[_Parser, _Parser]:
    """The parents: ``--config`` (every command), the client options (client commands)."""
    config = _Parser(add_help=False)  # the type add_parser(parents=...) expects
    config.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $MTPOOLD_CONFIG or ./mtpoold.toml)",
    )
    client = _Parser(add_help=False)
    client.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="daemon address: ws://HOST:PORT or unix:/path (default: $MTPOOLD_URL, else where"
        " the running daemon of the config's state_dir listens, else its daemon.listen)",
    )
    client.add_argument(
        "--token-file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="bearer token file (default: $MTPOOLD_TOKEN_FILE or <daemon.state_dir>/token)",
    )
    return config, client


def build_parser() -> argparse.ArgumentParser:
    """The ``mtpoold`` parser: one subparser per command (``args.command``), the accounts and
    proxies actions as ``args.action``; a top-level ``--config`` lands in
    ``args.global_config`` (so ``mtpoold --config A check-config --config B`` can be
    refused rather than one path silently winning)."""
    config, client = _options()
    raw = _HelpFormatter
    parser = _Parser(
        prog="mtpoold",
        description="Pool many Telegram user accounts through rate-gated proxies: `run` is the"
        " daemon, the other commands talk to it or prepare its files.",
        epilog=_epilog(
            [
                "mtpoold check-config /etc/mtpoold/mtpoold.toml",
                "mtpoold run --config /etc/mtpoold/mtpoold.toml",
                "mtpoold status",
                "mtpoold COMMAND --help",
            ],
            EXIT_CODES,
        ),
        formatter_class=raw,
    )
    parser.add_argument(
        "--config",
        dest="global_config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $MTPOOLD_CONFIG or ./mtpoold.toml)",
    )
    parser.add_argument("--version", action="version", version=f"mtpoold {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str, description: str, epilog: str, client_side: bool) -> _Parser:
        parents = [config, client] if client_side else [config]
        made: _Parser = sub.add_parser(
            name,
            parents=parents,
            help=help,
            description=description,
            epilog=epilog,
            formatter_class=raw,
        )
        return made

    run = command(
        "run",
        "run the daemon in the foreground",
        "Run the daemon in the foreground: every start-up check of check-config first (exit 2,"
        " nothing started, if one fails), then listen on daemon.listen and serve JSON-RPC"
        " until SIGTERM or SIGINT (a graceful stop: jobs in flight get"
        " daemon.shutdown_grace_s). SIGHUP re-reads the config, like `mtpoold reload`. Logs"
        " go to stderr; <state_dir>/daemon.json says where it listens while it runs.",
        _epilog(
            [
                "mtpoold run --config /etc/mtpoold/mtpoold.toml",
                "mtpoold run --log-level DEBUG --log-format json",
            ],
            {
                EXIT_OK: "stopped cleanly (SIGTERM, SIGINT)",
                EXIT_JOB_FAILED: "the daemon failed while running (state dir, token, socket)",
                EXIT_USAGE: "no config file, a config problem or a failed start-up check, a"
                " session held by another process: nothing started",
            },
        ),
        client_side=False,
    )
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="least severe log records written (default: INFO)",
    )
    run.add_argument(
        "--log-format",
        default=LOG_FORMATS[0],
        choices=LOG_FORMATS,
        help="one line per event on stderr: logfmt (default) or json",
    )

    status = command(
        "status",
        "show proxies and accounts",
        "A summary (jobs; accounts by state, adding up to the total), every proxy lane, then"
        " the accounts that need attention (cooling down, disabled, retired, held back by their"
        " proxy or a rate class, failing), at most 20, fitted to the terminal's width (80"
        " columns when piped, or $COLUMNS). --state/--proxy/--tag list every matching account"
        " instead; they shape the table only (--json prints the whole reply). States: idle,"
        " connecting, ready, busy, cooldown, disabled, retired, remote (cluster: held by"
        " another node or unheld) (README, Account states). In cluster mode the whole"
        " cluster follows: every live node (rpc address, accounts held, jobs), who holds which"
        " account, each node's lanes (README, Cluster).",
        _epilog(
            [
                "mtpoold status",
                "mtpoold status --watch 2",
                "mtpoold status --state cooldown --sort cooldown",
                "mtpoold status --proxy p1 --wide",
                "mtpoold status --json | jq .accounts_by_state",
            ],
            _CLIENT_CODES,
        ),
        client_side=True,
    )
    status.add_argument("--json", action="store_true", help="print the raw status JSON")
    status.add_argument(
        "--watch",
        type=_watch_seconds,
        metavar="SECONDS",
        help=f"refresh every SECONDS (>= {WATCH_MIN_S:g})",
    )
    status.add_argument("--watch-count", type=int, default=None, help=argparse.SUPPRESS)
    status.add_argument(
        "--wide", action="store_true", help="every account and every column (not 80 columns)"
    )
    status.add_argument(
        "--state",
        action="append",
        default=[],
        choices=STATUS_STATES,
        metavar="S",
        help="only accounts in this state (repeatable): " + ", ".join(STATUS_STATES),
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
        choices=STATUS_SORT_KEYS,
        metavar="KEY",
        help="order of the accounts: " + ", ".join(STATUS_SORT_KEYS) + " (default: state,"
        " the worst first)",
    )
    status.add_argument(
        "--summary", action="store_true", help="the summary and the proxies only (cheap)"
    )

    jobs = command(
        "jobs",
        "show the jobs in flight and what each waits for",
        "One line per job in flight, oldest first: its request (JSON-RPC id and connection),"
        " method, rate classes, age, deadline left, state (waiting_account, backoff,"
        " waiting_lane_capacity, waiting_gate, connecting, in_call, shared) and what it waits"
        " for. Never a job's arguments.",
        _epilog(["mtpoold jobs", "mtpoold jobs --json | jq '.jobs[].state'"], _CLIENT_CODES),
        client_side=True,
    )
    jobs.add_argument("--json", action="store_true", help="print the raw jobs JSON")

    call = command(
        "call",
        "call a method and print the JSON reply",
        "Send one job (or control request) and print its JSON reply. METHOD is a TL function"
        " (help.GetConfig, messages.GetHistory: sent as `invoke`; peer arguments may be"
        ' written "@name", "name", a t.me link or a marked id) or one of: '
        + ", ".join(sorted(CONTROL_METHODS))
        + ". While a job waits long (backoffs, cooldowns) and stderr is a terminal, the time"
        " waited is shown there.",
        _epilog(
            [
                "mtpoold call help.GetConfig",
                'mtpoold call messages.GetHistory \'{"peer": "@telegram", "limit": 5}\'',
                'mtpoold call resolve \'{"link_or_username": "t.me/telegram"}\' --tags ru,main',
                'mtpoold call get_messages \'{"peer": "https://t.me/telegram/123"}\'',
                "mtpoold call help.GetConfig --account acc-1 --deadline-ms 20000",
            ],
            {
                EXIT_OK: EXIT_CODES[EXIT_OK],
                EXIT_JOB_FAILED: "the job failed (FLOOD_WAIT, PEER_NOT_FOUND, no account"
                " available, ...): its error object is printed on stdout",
                EXIT_USAGE: "usage error: bad ARGS_JSON, invalid parameters, unknown method or"
                " TL function, no config file, a refused token",
                EXIT_UNREACHABLE: EXIT_CODES[EXIT_UNREACHABLE],
                EXIT_BROKEN_PIPE: EXIT_CODES[EXIT_BROKEN_PIPE],
            },
        ),
        client_side=True,
    )
    call.add_argument("method", metavar="METHOD")
    call.add_argument("args", metavar="ARGS_JSON", nargs="?", default=None, help="a JSON object")
    call.add_argument("--deadline-ms", type=int, metavar="N", help="job deadline in milliseconds")
    call.add_argument("--account", metavar="ID", help="run on this account only")
    call.add_argument(
        "--tags",
        type=_tags,
        metavar="T[,T...]",
        help="run only on accounts carrying every one of these tags (options.tags)",
    )

    reload = command(
        "reload",
        "make the daemon re-read its config file (like SIGHUP)",
        "The running daemon re-reads its config file. An invalid one changes nothing: every"
        " problem is printed and the daemon keeps running on the old config (exit 2)."
        " [daemon] settings (daemon.listen, limits) apply after a restart; reload always"
        " reaches the daemon where it listens now (<state_dir>/daemon.json).",
        _epilog(["mtpoold reload", "mtpoold reload --json"], _CLIENT_CODES),
        client_side=True,
    )
    reload.add_argument("--json", action="store_true", help="print the raw reply")

    accounts = command(
        "accounts",
        "list and manage accounts",
        "List the daemon's accounts, take them out of scheduling or back, look at and lift"
        " their cooldowns, and delete orphaned ones from the state store.",
        _epilog(
            [
                "mtpoold accounts list",
                "mtpoold accounts disable acc-1 --reason 'flagged by panel'",
                "mtpoold accounts enable acc-1",
                "mtpoold accounts cooldowns acc-1",
                "mtpoold accounts ACTION --help",
            ],
            _CLIENT_CODES,
        ),
        client_side=True,
    )
    acc_sub = accounts.add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser, required=True
    )

    def action(
        group: argparse._SubParsersAction[_Parser], name: str, help: str, **kw: str
    ) -> _Parser:
        made: _Parser = group.add_parser(
            name,
            parents=[config, client],
            help=help,
            description=kw.get("description", help[:1].upper() + help[1:] + "."),
            epilog=_epilog([kw["example"]], _CLIENT_CODES),
            formatter_class=raw,
        )
        return made

    acc_list = action(
        acc_sub,
        "list",
        "show every account",
        description="Show every account (state, proxy, cooldown, last error) and the orphaned"
        " accounts of the state store (no longer in the config). Every column, not fitted to"
        " the terminal (like status --wide; `mtpoold status` fits 80 columns).",
        example="mtpoold accounts list --json",
    )
    acc_enable = action(
        acc_sub,
        "enable",
        "bring a disabled account back into scheduling",
        description="Bring a disabled account back into scheduling. An account Telegram"
        " revoked or deactivated (SESSION_REVOKED, USER_DEACTIVATED, AUTH_KEY_UNREGISTERED"
        " ...) is refused unless --force: re-authorize it first (mtpoold authorize ID).",
        example="mtpoold accounts enable acc-1",
    )
    acc_enable.add_argument(
        "--force",
        action="store_true",
        help="enable even an account Telegram revoked or deactivated",
    )
    acc_disable = action(
        acc_sub,
        "disable",
        "take an account out of scheduling (kept on restart)",
        description="Take an account out of scheduling until `accounts enable` (kept across"
        " restarts; a call in flight runs on). Without --reason an account already disabled"
        f" keeps its reason; a new one gets {DEFAULT_DISABLE_REASON!r}.",
        example="mtpoold accounts disable acc-1 --reason 'flagged by panel'",
    )
    acc_disable.add_argument("--reason", default=None, help="why, for status")
    acc_forget = action(
        acc_sub,
        "forget",
        "delete an orphaned account (no longer in the config) from the state store",
        description="Delete an orphaned account (in the state store, no longer in the config)"
        " from the state store: its state, peers, cooldowns and budget spends. An account"
        " still in the config is refused: remove it from the config and reload first.",
        example="mtpoold accounts forget old-acc",
    )
    acc_cooldowns = action(
        acc_sub,
        "cooldowns",
        "show an account's cooldowns (account-wide, per rate class) and budgets left",
        description="Show an account's cooldowns: account-wide, per rate class (FLOOD_WAIT"
        " seconds left) and per chat, with each rate class's budget left.",
        example="mtpoold accounts cooldowns acc-1",
    )
    acc_clear = action(
        acc_sub,
        "clear-cooldown",
        "lift an account's FLOOD_WAIT cooldowns (all, or one rate class with --class)",
        description="Lift an account's FLOOD_WAIT cooldowns: all of them, or one rate class"
        " with --class. Telegram's own limit is not lifted: a call too soon may flood again.",
        example="mtpoold accounts clear-cooldown acc-1 --class resolve",
    )
    acc_clear.add_argument(
        "--class", dest="rate_class", default=None, metavar="C", help="only this rate class"
    )
    for one in (acc_enable, acc_disable, acc_forget, acc_cooldowns, acc_clear):
        one.add_argument("id", metavar="ID", help="account id")
    for one in (acc_list, acc_enable, acc_disable, acc_forget, acc_cooldowns, acc_clear):
        one.add_argument("--json", action="store_true", help="print the raw reply")

    proxies = command(
        "proxies",
        "list proxies",
        "List the daemon's proxy lanes: capacity in use, rate gate, cooldowns, errors.",
        _epilog(["mtpoold proxies list", "mtpoold proxies list --json"], _CLIENT_CODES),
        client_side=True,
    )
    proxy_sub = proxies.add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser, required=True
    )
    proxy_list = action(
        proxy_sub,
        "list",
        "show every proxy lane",
        description="Show every proxy lane: capacity in use, rate gate (next slot), cooldown,"
        " errors by class, accounts.",
        example="mtpoold proxies list --json",
    )
    proxy_list.add_argument("--json", action="store_true", help="print the raw reply")

    authorize = command(
        "authorize",
        "log accounts in and write their session files",
        "Log accounts in through their own proxy and server settings and write their session"
        " files (0600). Asks for the phone number, the login code and the 2FA password"
        " (without echo) unless given by the options. Refused while the daemon holds the"
        " session (exit 2).",
        _epilog(
            [
                "mtpoold authorize acc-1",
                "mtpoold authorize acc-1 --phone +15551234567 --code-from - < code.txt",
                "mtpoold authorize --config /etc/mtpoold/mtpoold.toml --force acc-1",
            ],
            {
                EXIT_OK: "every account asked for is logged in",
                EXIT_JOB_FAILED: "a login could not be completed (network, proxy, no answer)",
                EXIT_USAGE: "usage or config error, Telegram refused the login (wrong code,"
                " banned number ...), the session is held by the daemon",
            },
        ),
        client_side=False,
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

    check = command(
        "check-config",
        "validate a config file",
        "Validate PATH (default: --config, $MTPOOLD_CONFIG or ./mtpoold.toml; give one path,"
        " not both) and run the daemon's start-up checks on it: every problem one line,"
        " named by its key path, with a suggestion for a misspelt key or section.",
        _epilog(
            [
                "mtpoold check-config /etc/mtpoold/mtpoold.toml",
                "mtpoold check-config --config ./mtpoold.toml && mtpoold reload",
            ],
            {EXIT_OK: "the config is valid", EXIT_USAGE: "usage error, or the config has problems"},
        ),
        client_side=False,
    )
    check.add_argument(
        "path", metavar="PATH", nargs="?", default=None, help="the config file to check"
    )
    return parser
