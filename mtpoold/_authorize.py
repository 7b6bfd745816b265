"""``mtpoold authorize``: log an account in and write its session file.

The login runs exactly as the daemon will later connect — the account's own proxy, server
(DC override, test mode), extra RSA keys and device parameters, through `TelethonClient` — so
Telegram sees one device at one address from the first request on. It runs on a memory
session: the session file is written only once the login succeeded (a wrong code or password
leaves no file behind), atomically (a temporary file renamed over the target), mode 0600, in a
directory created 0700 when missing. Next to it, ``<session file>.device.json`` (0600) records
the device parameters presented in initConnection; the client uses them for every key the
config leaves unset, so later connections present the same device.

The account's session lock is taken first: while the daemon runs on the account, authorize
refuses with `SessionLocked` instead of racing it for the session.

Secrets: the login code and the 2FA password are read without echo (``getpass``) or from a
file / stdin, never logged nor printed.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs
import trio
import trio_asyncio
from telethon import errors as tl_errors
from telethon.sessions import SQLiteSession, StringSession

from ._client import (
    DEVICE_FIELDS,
    TelethonClient,
    device_sidecar_path,
    register_rsa_keys,
    session_file_path,
)
from ._errors import ConfigError, MtpooldError, classify
from ._secrets import PRIVATE_FILE_MODE, ensure_private_dir
from ._sessionlock import SessionLock

if TYPE_CHECKING:
    from ._config import AccountConfig, Config

__all__ = [
    "AuthorizeFailed",
    "Authorized",
    "Prompter",
    "authorize_account",
    "authorize_accounts",
    "check_phone",
    "write_session_file",
]

EXIT_FAILED: Final = 1  # the login failed (wrong code, wrong password, network)
EXIT_USAGE: Final = 2  # the request cannot be served (string session, unknown account, ...)

_WRONG_CODE: Final = (
    tl_errors.PhoneCodeInvalidError,
    tl_errors.PhoneCodeEmptyError,
    tl_errors.PhoneCodeExpiredError,
)


class AuthorizeFailed(MtpooldError):
    """An account could not be authorized; nothing was written.

    Attributes:
        account_id: The account, or None when the request names none.
        exit_code: 1 for a failed login (wrong code or password, Telegram or proxy error),
            2 for a request that cannot be served (string-session account, unknown account,
            unreadable answer file).
    """

    def __init__(
        self, account_id: str | None, message: str, *, exit_code: int = EXIT_FAILED
    ) -> None:
        super().__init__(message if account_id is None else f'account "{account_id}": {message}')
        self.account_id = account_id
        self.exit_code = exit_code


@attrs.frozen
class Authorized:
    """What `authorize_account` did.

    Attributes:
        account_id: The account.
        user_id: Telegram's id of the logged-in user.
        username: The user's username, or None.
        session_path: The session file written.
        device: The device parameters presented (and recorded in the sidecar).
    """

    account_id: str
    user_id: int
    username: str | None
    session_path: Path
    device: dict[str, str]


@attrs.define
class Prompter:
    """Where the phone number, login code and 2FA password come from.

    Each answer is taken from its option when given — ``phone``; ``code_from`` /
    ``password_from``: a file path, or ``"-"`` for one line of stdin (code first when both
    read stdin) — and otherwise asked for on the terminal, the code and password without echo.

    Args:
        phone: The phone number (international format), or None to ask.
        code_from: File holding the login code, ``"-"`` for stdin, or None to ask.
        password_from: File holding the 2FA password, ``"-"`` for stdin, or None to ask.
        stdin: Where ``"-"`` reads from.
        ask: ``ask(prompt, secret)``: asks interactively (default: ``input`` / ``getpass``).
    """

    phone: str | None = None
    code_from: str | None = None
    password_from: str | None = None
    stdin: TextIO = attrs.field(factory=lambda: sys.stdin)
    ask: Callable[[str, bool], str] = attrs.field(factory=lambda: _ask_terminal)

    def get_phone(self, account_id: str) -> str:
        """The phone number to log ``account_id`` in with, normalized (see `check_phone`).

        Raises:
            AuthorizeFailed: (exit code 2) if it is not a phone number, or stdin ended.
        """
        if self.phone is not None:
            return check_phone(account_id, self.phone)
        prompt = f"Phone number for account {account_id} (international format): "
        answer = self._ask(account_id, prompt, "phone number", "--phone", secret=False)
        return check_phone(account_id, answer)

    def get_code(self, account_id: str, phone: str) -> str:
        """The login code Telegram sent for ``phone``."""
        if self.code_from is not None:
            return self._read(account_id, self.code_from, "login code")
        prompt = f"Login code sent to {phone} (account {account_id}): "
        return self._ask(account_id, prompt, "login code", "--code-from", secret=True)

    def get_password(self, account_id: str) -> str:
        """The account's 2FA password (no stripping of inner spaces)."""
        if self.password_from is not None:
            return self._read(account_id, self.password_from, "2FA password")
        prompt = f"2FA password of account {account_id}: "
        return self._ask(account_id, prompt, "2FA password", "--password-from", secret=True)

    def _ask(self, account_id: str, prompt: str, what: str, option: str, *, secret: bool) -> str:
        try:
            return self.ask(prompt, secret)
        except EOFError:  # stdin closed, or not a terminal and empty (cron, `< /dev/null`)
            raise AuthorizeFailed(
                account_id,
                f"no {what}: stdin ended (not a terminal?); run it in a terminal or pass {option}",
                exit_code=EXIT_USAGE,
            ) from None

    def _read(self, account_id: str, source: str, what: str) -> str:
        if source == "-":
            line = self.stdin.readline()
            if not line:
                raise AuthorizeFailed(account_id, f"no {what} on stdin", exit_code=EXIT_USAGE)
            return line.rstrip("\r\n")
        try:
            return Path(source).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise AuthorizeFailed(
                account_id, f"cannot read the {what} from {source}: {reason}", exit_code=EXIT_USAGE
            ) from None


_PHONE_RE: Final = re.compile(r"^\+?[0-9]{5,15}$")  # E.164: at most 15 digits
_PHONE_PUNCTUATION: Final = str.maketrans("", "", " -().")


def check_phone(account_id: str, phone: str) -> str:
    """Normalize a phone number in international format, or refuse it.

    Spaces, dashes, dots and parentheses are dropped (``+1 (555) 000-0001`` is
    ``+15550000001``); what remains must be digits (5 to 15) with an optional leading ``+``.

    Raises:
        AuthorizeFailed: (exit code 2) naming what was given (it is not a secret).
    """
    text = phone.strip().translate(_PHONE_PUNCTUATION)
    if not _PHONE_RE.match(text):
        raise AuthorizeFailed(
            account_id,
            f"invalid phone number {json.dumps(phone.strip())}: expected international"
            " format, digits with an optional leading + (e.g. +15551234567)",
            exit_code=EXIT_USAGE,
        )
    return text


def _session_holds_login(path: Path) -> bool:
    """Whether a Telethon session file holds an auth key (it was logged in)."""
    if not path.is_file():
        return False
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT auth_key FROM sessions").fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # not a session database: nothing to lose by replacing it
        return False
    return any(row[0] for row in rows)


def _ask_terminal(prompt: str, secret: bool) -> str:
    answer = getpass.getpass(prompt) if secret else input(prompt)
    return answer.strip() if not secret else answer


# --- writing ------------------------------------------------------------------------------------


def _write_private(path: Path, fill: Callable[[Path], None]) -> None:
    """Create ``path`` 0600 through a temporary sibling filled by ``fill``, then rename."""
    if not path.parent.exists():
        ensure_private_dir(path.parent)  # a new session directory is private
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.suffix != path.suffix:  # Telethon's SQLiteSession appends ".session" otherwise
        tmp = tmp.with_name(tmp.name + path.suffix)
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        os.fchmod(fd, PRIVATE_FILE_MODE)
        os.close(fd)
        fill(tmp)
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def write_session_file(
    session: str | os.PathLike[str], string_session: str, device: dict[str, str]
) -> Path:
    """Write a Telethon SQLite session (and its device sidecar) from a logged-in session.

    Args:
        session: The account's configured ``session`` path (``.session`` is appended as
            Telethon does, see `session_file_path`).
        string_session: The logged-in session as Telethon ``StringSession`` text.
        device: The device parameters presented at login, for the sidecar.

    Returns:
        The session file written (mode 0600; replaced atomically if it existed).

    Raises:
        OSError: if a file cannot be written; no partial file is left behind.
    """
    target = session_file_path(session)
    source = StringSession(string_session)

    def fill_session(tmp: Path) -> None:
        out = SQLiteSession(str(tmp))
        try:
            out.set_dc(source.dc_id, source.server_address, source.port)
            out.auth_key = source.auth_key
            out.save()
        finally:
            out.close()

    def fill_sidecar(tmp: Path) -> None:
        tmp.write_text(json.dumps(device, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    _write_private(target, fill_session)
    _write_private(device_sidecar_path(session), fill_sidecar)
    return target


# --- logging in ---------------------------------------------------------------------------------


async def authorize_account(
    config: Config, account: AccountConfig, prompter: Prompter, *, force: bool = False
) -> Authorized:
    """Log one account in and write its session file; must run inside a trio-asyncio loop.

    Args:
        config: The config (for the account's proxy and server).
        account: The account; it must have a ``session`` file path.
        prompter: Where the phone number, code and password come from.
        force: Log in again even if the session file already holds a login.

    Returns:
        Who is logged in and where the session was written.

    Raises:
        AuthorizeFailed: wrong code or password, Telegram or proxy failure (exit code 1);
            string-session account, invalid phone number, stdin ended, or a session file
            that already holds a login without ``force`` (exit code 2). Nothing was written.
        SessionLocked: the daemon (or another authorize) holds the session.
        ConfigError: the account's proxy, server or RSA keys cannot be used.
    """
    aid = account.id
    if account.session is None:
        raise AuthorizeFailed(
            aid,
            'uses a string session; only accounts with a session file (session = "path")'
            " can be authorized",
            exit_code=EXIT_USAGE,
        )
    telegram = config.telegram_for(account)
    register_rsa_keys(telegram.rsa_keys)
    from ._config import proxy_key

    proxy = config.proxy_for(account)
    with SessionLock.for_session_file(aid, account.session):
        existing = session_file_path(account.session)
        if not force and _session_holds_login(existing):
            raise AuthorizeFailed(
                aid,
                f"session file {existing} already holds a login; pass --force to log in"
                " again and replace it",
                exit_code=EXIT_USAGE,
            )
        client = TelethonClient(
            account=account,
            telegram=telegram,
            proxy=proxy,
            proxy_key=proxy_key(proxy),
            session=StringSession(),
        )
        try:
            me = await _log_in(client, aid, prompter)
            tg = client.telegram_client()
            presented = {f: str(getattr(tg._init_request, f)) for f in DEVICE_FIELDS}
            text = tg.session.save()
        finally:
            await client.disconnect()
        path = write_session_file(account.session, text, presented)
    return Authorized(
        account_id=aid,
        user_id=int(me.id),
        username=getattr(me, "username", None),
        session_path=path,
        device=presented,
    )


async def _log_in(client: TelethonClient, aid: str, prompter: Prompter) -> Any:
    try:
        await client.connect()
    except (ConfigError, AuthorizeFailed):
        raise
    except Exception as exc:
        failure = classify(exc)
        raise AuthorizeFailed(aid, f"cannot connect: {failure.message}") from None
    tg = client.telegram_client()
    phone = await trio.to_thread.run_sync(prompter.get_phone, aid)
    try:
        await client.aio(tg.send_code_request, phone)
    except tl_errors.PhoneNumberInvalidError:
        raise AuthorizeFailed(
            aid, f"Telegram does not know the phone number {phone}", exit_code=EXIT_USAGE
        ) from None
    except tl_errors.RPCError as exc:
        reason = classify(exc).message
        raise AuthorizeFailed(aid, f"sending the login code failed: {reason}") from None
    code = await trio.to_thread.run_sync(prompter.get_code, aid, phone)
    try:
        return await client.aio(tg.sign_in, phone, code)
    except _WRONG_CODE as exc:
        name = classify(exc).rpc_name or type(exc).__name__
        raise AuthorizeFailed(aid, f"wrong login code ({name}); nothing was written") from None
    except tl_errors.SessionPasswordNeededError:
        pass
    password = await trio.to_thread.run_sync(prompter.get_password, aid)
    try:
        return await client.aio(tg.sign_in, password=password)
    except tl_errors.PasswordHashInvalidError:
        raise AuthorizeFailed(aid, "wrong 2FA password; nothing was written") from None
    except tl_errors.RPCError as exc:
        raise AuthorizeFailed(aid, f"2FA login failed: {classify(exc).message}") from None


def _select(config: Config, account_ids: Sequence[str]) -> list[AccountConfig]:
    by_id = {a.id: a for a in config.accounts}
    unknown = [i for i in account_ids if i not in by_id]
    if unknown:
        raise AuthorizeFailed(unknown[0], "no such account in the config", exit_code=EXIT_USAGE)
    if account_ids:
        return [by_id[i] for i in dict.fromkeys(account_ids)]
    chosen = [a for a in config.accounts if a.session is not None]
    if not chosen:
        raise AuthorizeFailed(
            None, "no account has a session file to authorize", exit_code=EXIT_USAGE
        )
    return chosen


def authorize_accounts(
    config: Config,
    account_ids: Sequence[str],
    *,
    phone: str | None = None,
    code_from: str | None = None,
    password_from: str | None = None,
    force: bool = False,
    out: TextIO | None = None,
) -> list[Authorized]:
    """Authorize accounts one after another (``mtpoold authorize``); runs its own Trio loop.

    Args:
        config: The config.
        account_ids: Accounts to authorize; empty: every account with a session file.
        phone: The phone number; only with a single account.
        code_from: File with the login code, or ``"-"`` for stdin; only with a single account.
        password_from: File with the 2FA password, or ``"-"``; only with a single account.
        force: Log in again accounts whose session file already holds a login.
        out: Where one success line per account is printed (default stdout).

    Returns:
        One `Authorized` per account.

    Raises:
        AuthorizeFailed: the first account that failed (the ones before it were written).
        SessionLocked: an account's session is held (by the daemon).
        ConfigError: an account's proxy, server or RSA keys cannot be used.
    """
    accounts = _select(config, account_ids)
    if len(accounts) > 1 and (phone or code_from or password_from):
        raise AuthorizeFailed(
            accounts[0].id,
            "--phone, --code-from and --password-from need exactly one ACCOUNT_ID",
            exit_code=EXIT_USAGE,
        )
    if phone is not None:  # refuse a malformed --phone before connecting anywhere
        phone = check_phone(accounts[0].id, phone)
    prompter = Prompter(phone=phone, code_from=code_from, password_from=password_from)
    out = out or sys.stdout

    async def run() -> list[Authorized]:
        done = []
        async with trio_asyncio.open_loop():
            for account in accounts:
                result = await authorize_account(config, account, prompter, force=force)
                who = f"@{result.username}" if result.username else "user"
                print(
                    f"account {result.account_id}: authorized as {who} (id {result.user_id});"
                    f" session written to {result.session_path}",
                    file=out,
                    flush=True,
                )
                done.append(result)
        return done

    try:
        return trio.run(run)
    except BaseExceptionGroup as group:  # the trio-asyncio loop's nursery wraps what we raise
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]
