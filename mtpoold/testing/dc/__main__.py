"""``python -m mtpoold.testing.dc``: run a loopback Telegram DC until Ctrl-C or SIGTERM.

Faults from the command line, applied once the DC listens (each flag may be repeated where
it makes sense; ACCOUNT as in :mod:`mtpoold.testing.dc._shell`: ``aN``, phone, user id,
``@username``; no ACCOUNT means every user of the world)::

    --flood METHOD=SECONDS[:ACCOUNT]        e.g. --flood contacts.ResolveUsername=86400:a0
    --limit METHOD=REQUESTS/WINDOW_S[:ACCOUNT]   e.g. --limit messages.GetHistory=30/60
    --error METHOD=CODE:NAME[:ACCOUNT]      e.g. --error users.GetFullUser=500:INTERNAL
    --drop P  --delay-ms MS  --blackhole  --refuse  --revoke ACCOUNT|AUTH_KEY_ID

and at run time, the same control language (``help`` lists it) on ``--control -`` (stdin,
answers on stdout) and/or ``--control PATH`` (a unix socket, 0600; one answer line per
command line, e.g. ``echo 'flood messages.GetHistory 30' | socat - UNIX:/tmp/dc.sock``)::

    flood messages.GetHistory 30      ->  ok flood messages.GetHistory 30 s on 6 account(s)
    counters                          ->  ok {"help.GetConfig":2,...}
    nonsense                          ->  error unknown command 'nonsense' (try: help)

A bad command is answered ``error …`` and changes nothing; the DC keeps serving. Exit status:
0 after Ctrl-C / SIGTERM, 1 if the address cannot be bound, 2 for a bad world file or a bad
fault on the command line.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TextIO

import trio

from ._server import DC, DEFAULT_SEED
from ._shell import DCShell, serve_control_socket, serve_control_stdin
from ._world import default_world, load_world


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtpoold.testing.dc",
        description="Run a loopback MTProto DC for tests and demos (NOT a real Telegram server).",
        epilog=(
            "ACCOUNT: aN (N-th user of the world, as listed at start), phone, user id or"
            " @username; none: every user. Run-time commands: send 'help' on a --control"
            " channel. Exit status: 0 stopped, 1 cannot bind, 2 bad world file or fault."
        ),
    )
    p.add_argument("--world", help="TOML world file (default: the built-in default world)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    p.add_argument(
        "--seed",
        default=DEFAULT_SEED,
        help="seed for RSA key, auth keys, salts (default: a fixed one; every DC on the same"
        " seed hands out the same auth keys, which session locks count as one session)",
    )
    p.add_argument("--dc-id", type=int, default=2, help="DC id to claim (default 2)")
    faults = p.add_argument_group("faults (applied once listening)")
    faults.add_argument(
        "--flood",
        action="append",
        default=[],
        metavar="METHOD=SECONDS[:ACCOUNT]",
        help="answer METHOD with FLOOD_WAIT_X for SECONDS from start",
    )
    faults.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="METHOD=REQUESTS/WINDOW_S[:ACCOUNT]",
        help="a budget: REQUESTS calls per WINDOW_S seconds per account, then FLOOD_WAIT_X",
    )
    faults.add_argument(
        "--error",
        action="append",
        default=[],
        metavar="METHOD=CODE:NAME[:ACCOUNT]",
        help="answer every call of METHOD with rpc_error(CODE, NAME)",
    )
    faults.add_argument(
        "--drop", metavar="P", help="close the connection instead of answering, probability P"
    )
    faults.add_argument("--delay-ms", metavar="MS", help="send every answer MS ms late")
    faults.add_argument("--blackhole", action="store_true", help="answer nothing at all")
    faults.add_argument("--refuse", action="store_true", help="close every new connection")
    faults.add_argument(
        "--revoke",
        action="append",
        default=[],
        metavar="ACCOUNT|AUTH_KEY_ID",
        help="log these auth keys out (401 AUTH_KEY_UNREGISTERED)",
    )
    p.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="PATH|-",
        help="read control commands from a unix socket at PATH, or from stdin for '-'",
    )
    return p


def _split(spec: str, flag: str) -> tuple[str, list[str]]:
    method, sep, rest = spec.partition("=")
    if not sep or not method or not rest:
        raise _BadFault(f"{flag} {spec!r}: expected METHOD=…")
    return method, rest.split(":")


def _commands(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(flag as given, control command) for every fault of the command line."""
    out: list[tuple[str, str]] = []
    for spec in args.flood:
        method, parts = _split(spec, "--flood")
        if len(parts) > 2:
            raise _BadFault(f"--flood {spec!r}: expected METHOD=SECONDS[:ACCOUNT]")
        out.append((f"--flood {spec}", " ".join(["flood", method, *parts])))
    for spec in args.limit:
        method, parts = _split(spec, "--limit")
        requests, sep, window = parts[0].partition("/")
        if not sep or len(parts) > 2:
            raise _BadFault(f"--limit {spec!r}: expected METHOD=REQUESTS/WINDOW_S[:ACCOUNT]")
        out.append((f"--limit {spec}", " ".join(["limit", method, requests, window, *parts[1:]])))
    for spec in args.error:
        method, parts = _split(spec, "--error")
        if len(parts) not in (2, 3):
            raise _BadFault(f"--error {spec!r}: expected METHOD=CODE:NAME[:ACCOUNT]")
        out.append((f"--error {spec}", " ".join(["error", method, *parts])))
    if args.drop is not None:
        out.append((f"--drop {args.drop}", f"drop {args.drop}"))
    if args.delay_ms is not None:
        out.append((f"--delay-ms {args.delay_ms}", f"delay {args.delay_ms}"))
    if args.blackhole:
        out.append(("--blackhole", "blackhole on"))
    if args.refuse:
        out.append(("--refuse", "refuse on"))
    for target in args.revoke:
        out.append((f"--revoke {target}", f"revoke {target}"))
    return out


class _BadFault(Exception):
    """A fault of the command line the shell refused: exit status 2."""


def _banner(dc: DC, out: TextIO) -> None:
    print(f"loopback DC {dc.dc_id} listening on {dc.host}:{dc.port}", file=out)
    print(f"Telegram's limits from the world: {dc.limits!r}", file=out)
    print("\nRSA public key (telethon.crypto.rsa.add_key(pem, old=False)):", file=out)
    print(dc.public_key_pem, file=out)
    print("TEST-ONLY session strings (StringSession), valid for this seed and port:", file=out)
    for index, user in enumerate(dc.world.users):
        label = f"a{index} {user.phone or user.id} @{user.username or '-'}"
        if user.deactivated:
            label += " (deactivated)"
        if user.password:
            label += " (2FA)"
        print(f"  {label}: {dc.session_string(user.id)}", file=out)
    print("\nLogin code for auth.signIn: 12345. Ctrl-C to stop.", file=out, flush=True)


async def _serve(dc: DC, commands: list[tuple[str, str]], controls: list[str], out: TextIO) -> None:
    shell = DCShell(dc)

    def answer(line: str) -> None:
        print(line, file=out, flush=True)

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(dc.serve)
            for flag, command in commands:
                reply = shell.execute(command)
                if not reply.startswith("ok"):
                    raise _BadFault(f"{flag}: {reply.removeprefix('error ')}")
            for path in controls:
                if path != "-":
                    await nursery.start(serve_control_socket, shell, path)
            _banner(dc, out)
            if "-" in controls:
                nursery.start_soon(serve_control_stdin, shell, answer)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, serve until interrupted; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        world = load_world(args.world) if args.world else default_world()
        commands = _commands(args)
    except (OSError, ValueError, _BadFault) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dc = DC(world, host=args.host, port=args.port, seed=args.seed, dc_id=args.dc_id)
    try:
        trio.run(_serve, dc, commands, args.control, sys.stdout)
    except BaseException as exc:
        leaf = _single(exc)
        if isinstance(leaf, KeyboardInterrupt):
            return 0
        if isinstance(leaf, _BadFault | OSError):
            print(f"error: {leaf}", file=sys.stderr)
            return 2 if isinstance(leaf, _BadFault) else 1
        raise
    return 0


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested one-member exception groups (else ``exc``)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
