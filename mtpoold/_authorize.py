"""``mtpoold authorize``: log an account in and write its session file.

The login runs exactly as the daemon will later connect — the account's own proxy, server
(DC override, test mode), extra RSA keys and device parameters, through `TelethonClient` — so
Telegram sees one device at one address from the first request on. It runs on a memory
session: the session file is written only once the login succeeded (a wrong code or password
leaves no file behind), atomically (a temporary file renamed over the target), mode 0600, in a
directory created 0700 when missing. Next to it, ``<session file>.device.json`` (0600) records
the device parameters presented in initConnection; the client uses them for every key the
config leaves unset, so later connections present the same device.

The account's session locks are taken first and held until the file is written: the file
lock of its session file, and — when the file already holds a login — the key lock of that
auth key (`mtpoold._sessionlock`). While a daemon runs on the session, under any spelling,
symlink or copy of the file, authorize refuses with `SessionLocked` (exit 2, the holder's
PID), ``--force`` or not, instead of replacing a session in use.

Bounded and talkative: the connect has the account's ``connect_timeout_s``, every call
``policy.call_deadline_s``, as in the daemon; each step is one line on stderr (connecting
through which proxy, code sent, waiting for the code, signed in). Each refusal by Telegram is
one sentence with exit code 2 (unknown or unregistered number, banned number, wrong or
expired code, wrong 2FA password — asked again, up to `PASSWORD_ATTEMPTS` times, when it is
typed at the terminal, flood waits); network trouble and other errors exit 1.

Secrets: the login code and the 2FA password are read without echo (``getpass``) or from a
file / stdin, never logged nor printed.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import attrs
import trio
from telethon import errors as tl_errors
from telethon.sessions import SQLiteSession, StringSession

from ._aioloop import open_aio_loop
from ._classify import classify
from ._client import TelethonClient
from ._config import AccountConfig, Config, proxy_key
from ._errors import ConfigError, MtpooldError, leaves
from ._rsakeys import register_rsa_keys
from ._secrets import PRIVATE_FILE_MODE, ensure_private_dir
from ._sessionfiles import DEVICE_FIELDS, device_sidecar_path, session_file_path
from ._sessionid import SessionIdentity, file_session_key, key_id_of
from ._sessionlock import SessionLock

__all__ = [
    "AuthorizeFailed",
    "Authorized",
    "Prompter",
    "authorize_account",
    "authorize_accounts",
    "check_phone",
    "write_session_file",
]

EXIT_FAILED: Final = 1  # the login could not be completed (network, proxy, no answer)
EXIT_USAGE: Final = 2  # refused: by Telegram (wrong code, ...) or the request (string session)
PASSWORD_ATTEMPTS: Final = 3  # 2FA passwords asked at the terminal before giving up
_WRONG_PASSWORD: Final = "wrong 2FA password; nothing was written (run it again to retry)"


class AuthorizeFailed(MtpooldError):
    """An account could not be authorized; nothing was written.

    Attributes:
        account_id: The account, or None when the request names none.
        exit_code: 1 for a login that could not be completed (network, proxy, no answer in
            time, an unexpected Telegram error); 2 for a refusal — by Telegram (unregistered
            number, wrong or expired code, wrong 2FA password, flood wait) or of the request
            (string-session account, unknown account, unreadable answer file, a session that
            already holds a login).
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

    def check_answerable(self, account_id: str) -> None:
        """Refuse, before anything connects, a login whose answers would be asked at a
        terminal there is none of (cron, a pipe, ``< /dev/null``): the prompt would go
        unanswered, after a connection to the DC (and a login code sent for nothing).

        The phone number is asked with ``input`` (it reads stdin: stdin must be a terminal);
        the login code with ``getpass`` (it reads the controlling terminal, ``/dev/tty``,
        even when stdin is redirected, say by ``--password-from -``). An injected ``ask`` is
        taken to answer. The 2FA password is not checked: only a 2FA account needs it
        (without a terminal or ``--password-from`` it fails when asked, exit code 2).

        Raises:
            AuthorizeFailed: (exit code 2) naming the options to pass.
        """
        if self.ask is not _ask_terminal or _is_a_terminal(self.stdin):
            return
        no_phone = self.phone is None
        no_code = self.code_from is None and not _has_controlling_terminal()
        if no_phone and no_code:
            text = (
                "no terminal to ask on (stdin is not one, /dev/tty cannot be opened);"
                " pass --phone and --code-from"
            )
        elif no_phone:
            text = "stdin is not a terminal to ask the phone number on; pass --phone"
        elif no_code:
            text = (
                "no terminal to ask the login code on (stdin is not one, /dev/tty cannot be"
                " opened); pass --code-from"
            )
        else:
            return
        raise AuthorizeFailed(account_id, text, exit_code=EXIT_USAGE)

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

    @property
    def password_typed(self) -> bool:
        """Whether the 2FA password is typed at the terminal (so a wrong one may be retried)."""
        return self.password_from is None

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


def _existing_key(path: Path) -> tuple[int, bytes] | None:
    """The DC id and auth key a session file holds, or None (no file, no key, not a session:
    nothing to lose by replacing it)."""
    try:
        return file_session_key(path)
    except (OSError, ValueError):
        return None


def _is_a_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # closed
        return False


def _has_controlling_terminal() -> bool:
    """Whether ``/dev/tty`` opens (where ``getpass`` asks, whatever stdin is)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


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
    config: Config,
    account: AccountConfig,
    prompter: Prompter,
    *,
    force: bool = False,
    err: TextIO | None = None,
) -> Authorized:
    """Log one account in and write its session file; must run inside a trio-asyncio loop.

    Args:
        config: The config (for the account's proxy and server, its connect timeout and
            ``policy.call_deadline_s``).
        account: The account; it must have a ``session`` file path.
        prompter: Where the phone number, code and password come from.
        force: Log in again even if the session file already holds a login (never while a
            process holds that login).
        err: Where the step lines go (default stderr).

    Returns:
        Who is logged in and where the session was written.

    Raises:
        AuthorizeFailed: exit code 2 for a refusal (Telegram's: unregistered number, wrong
            or expired code, wrong 2FA password, flood wait; or the request's: string-session
            account, invalid phone number, stdin ended or no terminal to ask on
            (`Prompter.check_answerable`, before connecting), a session file that already holds a
            login without ``force``); exit code 1 when the login could not be completed (no
            connection or no answer in time, a proxy failure). Nothing was written.
        SessionLocked: a daemon (or another authorize) holds the session file or its auth
            key.
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
    prompter.check_answerable(aid)  # before any lock, file or connection
    telegram = config.telegram_for(account)
    register_rsa_keys(telegram.rsa_keys)

    proxy = config.proxy_for(account)
    say = _Steps(aid, err or sys.stderr)
    with contextlib.ExitStack() as locks:
        file_lock = SessionLock.for_session_file(aid, account.session)
        locks.enter_context(file_lock)
        existing = session_file_path(account.session)
        found = _existing_key(file_lock.session_path or existing)
        if found is not None:
            # A daemon on this login — any spelling or copy of the file — holds its key lock.
            identity = SessionIdentity(
                aid, key_id_of(*found), found[0], f"session file {existing.absolute()}"
            )
            locks.enter_context(SessionLock.for_session_key(identity))
            if not force:
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
            me = await _log_in(client, config, account, prompter, say)
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


@attrs.define
class _Steps:
    """One line per login step on stderr: ``account acc: connecting ...``."""

    account_id: str
    out: TextIO

    def __call__(self, text: str) -> None:
        print(f"account {self.account_id}: {text}", file=self.out, flush=True)


def _route(config: Config, account: AccountConfig) -> str:
    """Where the connection goes, for the step line: DC and proxy (name, type, address; never
    the proxy's credentials)."""
    telegram = config.telegram_for(account)
    server = f"DC {telegram.dc_id}"
    if telegram.dc_host is not None:
        host = f"[{telegram.dc_host}]" if ":" in telegram.dc_host else telegram.dc_host
        server += f" at {host}:{telegram.dc_port}"
    if telegram.test_mode:
        server += " (test servers)"
    proxy = config.proxy_for(account)
    if proxy is None:
        return f"{server}, directly (no proxy)"
    return f"{server} through proxy {proxy.name} ({proxy.type} {proxy.host}:{proxy.port})"


def _refusal(aid: str, exc: BaseException, phone: str) -> AuthorizeFailed | None:
    """Telegram's refusals during the login, as one sentence each (exit code 2)."""
    if isinstance(exc, tl_errors.PhoneNumberUnoccupiedError):
        text = (
            f"no Telegram account uses the phone number {phone}; sign it up in an official"
            " Telegram app first"
        )
    elif isinstance(exc, tl_errors.PhoneNumberInvalidError):
        text = f"Telegram does not know the phone number {phone}"
    elif isinstance(exc, tl_errors.PhoneNumberBannedError):
        text = f"Telegram has banned the phone number {phone}"
    elif isinstance(exc, tl_errors.PhoneCodeInvalidError | tl_errors.PhoneCodeEmptyError):
        text = "wrong login code; nothing was written (run it again for a new code)"
    elif isinstance(exc, tl_errors.PhoneCodeExpiredError):
        text = "the login code expired; nothing was written (run it again for a new code)"
    elif isinstance(exc, tl_errors.PasswordHashInvalidError):
        text = _WRONG_PASSWORD
    elif isinstance(exc, tl_errors.FloodWaitError | tl_errors.FloodError):
        wait_s = classify(exc).retry_after_s
        after = f" for {wait_s:g} s" if wait_s else ""
        text = f"Telegram refuses more login attempts{after} (flood wait); try again later"
    elif isinstance(exc, tl_errors.PhonePasswordFloodError | tl_errors.PhoneNumberFloodError):
        text = "Telegram refuses more login attempts for now (too many); try again later"
    else:
        return None
    return AuthorizeFailed(aid, text, exit_code=EXIT_USAGE)


async def _call(
    client: TelethonClient,
    aid: str,
    step: str,
    timeout_s: float,
    phone: str,
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    passthrough: tuple[type[Exception], ...] = (tl_errors.SessionPasswordNeededError,),
    **kwargs: Any,
) -> Any:
    """One login call, bounded by ``timeout_s`` (the daemon's call deadline); Telegram's
    refusals become exit-2 sentences, everything else exit 1 naming the step; the
    ``passthrough`` errors are the caller's to handle."""
    try:
        with trio.fail_after(timeout_s):
            return await client.aio(fn, *args, **kwargs)
    except trio.TooSlowError:
        raise AuthorizeFailed(
            aid, f"{step}: Telegram did not answer within {timeout_s:g} s"
        ) from None
    except passthrough:
        raise
    except Exception as exc:
        refusal = _refusal(aid, exc, phone)
        if refusal is not None:
            raise refusal from None
        raise AuthorizeFailed(aid, f"{step} failed: {classify(exc).message}") from None


async def _log_in(
    client: TelethonClient,
    config: Config,
    account: AccountConfig,
    prompter: Prompter,
    say: _Steps,
) -> Any:
    aid = account.id
    connect_s = config.telegram_for(account).connect_timeout_s
    call_s = config.policy.call_deadline_s
    route = _route(config, account)
    say(f"connecting to {route}")
    try:
        with trio.move_on_after(connect_s) as scope:
            await client.connect()
    except (ConfigError, AuthorizeFailed):
        raise
    except Exception as exc:
        failure = classify(exc)
        raise AuthorizeFailed(aid, f"cannot connect to {route}: {failure.message}") from None
    if scope.cancelled_caught:
        raise AuthorizeFailed(
            aid, f"cannot connect to {route}: no answer within {connect_s:g} s (connect_timeout_s)"
        )
    say("connected")
    tg = client.telegram_client()
    phone = await trio.to_thread.run_sync(prompter.get_phone, aid)
    await _call(client, aid, "sending the login code", call_s, phone, tg.send_code_request, phone)
    say(f"login code sent to {phone}; waiting for the code")
    code = await trio.to_thread.run_sync(prompter.get_code, aid, phone)
    say("signing in")
    try:
        me = await _call(client, aid, "signing in", call_s, phone, tg.sign_in, phone, code)
    except tl_errors.SessionPasswordNeededError:
        pass
    else:
        say("signed in")
        return me
    attempts = PASSWORD_ATTEMPTS if prompter.password_typed else 1
    for attempt in range(1, attempts + 1):
        say("the account has a 2FA password; waiting for it")
        password = await trio.to_thread.run_sync(prompter.get_password, aid)
        try:
            me = await _call(
                client, aid, "checking the 2FA password", call_s, phone, tg.sign_in,
                password=password, passthrough=(tl_errors.PasswordHashInvalidError,),
            )  # fmt: skip
        except tl_errors.PasswordHashInvalidError as exc:
            if attempt == attempts:
                raise AuthorizeFailed(aid, _WRONG_PASSWORD, exit_code=EXIT_USAGE) from exc
            say(f"wrong 2FA password; try again ({attempts - attempt} left)")
            continue
        say("signed in")
        return me
    raise AssertionError("unreachable")  # pragma: no cover


def _select(
    config: Config, account_ids: Sequence[str], *, force: bool, err: TextIO
) -> list[AccountConfig]:
    by_id = {a.id: a for a in config.accounts}
    unknown = [i for i in account_ids if i not in by_id]
    if unknown:
        raise AuthorizeFailed(unknown[0], "no such account in the config", exit_code=EXIT_USAGE)
    if account_ids:
        return [by_id[i] for i in dict.fromkeys(account_ids)]
    with_file = [a for a in config.accounts if a.session is not None]
    if not with_file:
        raise AuthorizeFailed(
            None, "no account has a session file to authorize", exit_code=EXIT_USAGE
        )
    if force:
        return with_file
    chosen = []
    for account in with_file:
        path = session_file_path(account.session or "")
        if _existing_key(Path(os.path.realpath(path))) is not None:
            print(
                f"account {account.id}: already logged in ({path}); skipped (name it, with"
                " --force, to log in again)",
                file=err,
                flush=True,
            )
        else:
            chosen.append(account)
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
    err: TextIO | None = None,
) -> list[Authorized]:
    """Authorize accounts one after another (``mtpoold authorize``); runs its own Trio loop.

    Args:
        config: The config.
        account_ids: Accounts to authorize; empty: every account with a session file that
            does not hold a login yet (each one skipped says so on `err`), or with ``force``
            every account with a session file.
        phone: The phone number; only with a single account.
        code_from: File with the login code, or ``"-"`` for stdin; only with a single account.
        password_from: File with the 2FA password, or ``"-"``; only with a single account.
        force: Log in again accounts whose session file already holds a login.
        out: Where one success line per account is printed (default stdout).
        err: Where the step lines go (default stderr).

    Returns:
        One `Authorized` per account authorized.

    Raises:
        AuthorizeFailed: the first account that failed (the ones before it were written).
        SessionLocked: an account's session is held (by the daemon).
        ConfigError: an account's proxy, server or RSA keys cannot be used.
    """
    err = err or sys.stderr
    out = out or sys.stdout
    accounts = _select(config, account_ids, force=force, err=err)
    if len(accounts) > 1 and (phone or code_from or password_from):
        raise AuthorizeFailed(
            accounts[0].id,
            "--phone, --code-from and --password-from need exactly one ACCOUNT_ID",
            exit_code=EXIT_USAGE,
        )
    if phone is not None and accounts:  # refuse a malformed --phone before connecting anywhere
        phone = check_phone(accounts[0].id, phone)
    prompter = Prompter(phone=phone, code_from=code_from, password_from=password_from)

    async def run() -> list[Authorized]:
        done = []
        async with open_aio_loop():
            for account in accounts:
                result = await authorize_account(config, account, prompter, force=force, err=err)
                who = f"@{result.username}" if result.username else "user"
                print(
                    f"account {result.account_id}: authorized as {who} (id {result.user_id});"
                    f" session written to {result.session_path}",
                    file=out,
                    flush=True,
                )
                done.append(result)
        return done

    if not accounts:
        return []
    try:
        return trio.run(run)
    except BaseExceptionGroup as group:  # the trio-asyncio loop's nursery wraps what we raise
        found = leaves(group)
        if len(found) == 1 and isinstance(found[0], Exception):
            raise found[0] from None
        raise
