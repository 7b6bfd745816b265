"""``python -m mtpoold.testing.dc``: run a loopback Telegram DC until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import trio

from ._server import DC, DEFAULT_SEED
from ._world import default_world, load_world


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtpoold.testing.dc",
        description="Run a loopback MTProto DC for tests and demos (NOT a real Telegram server).",
    )
    p.add_argument("--world", help="TOML world file (default: the built-in default world)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    p.add_argument("--seed", default=DEFAULT_SEED, help="seed for RSA key, auth keys, salts")
    p.add_argument("--dc-id", type=int, default=2, help="DC id to claim (default 2)")
    return p


async def _serve(dc: DC, out: TextIO) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(dc.serve)
        print(f"loopback DC {dc.dc_id} listening on {dc.host}:{dc.port}", file=out)
        print(f"Telegram's limits from the world: {dc.limits!r}", file=out)
        print("\nRSA public key (telethon.crypto.rsa.add_key(pem, old=False)):", file=out)
        print(dc.public_key_pem, file=out)
        print("TEST-ONLY session strings (StringSession), valid for this seed and port:", file=out)
        for user in dc.world.users:
            label = f"{user.phone or user.id} @{user.username or '-'}"
            if user.deactivated:
                label += " (deactivated)"
            if user.password:
                label += " (2FA)"
            print(f"  {label}: {dc.session_string(user.id)}", file=out)
        print("\nLogin code for auth.signIn: 12345. Ctrl-C to stop.", file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, serve until interrupted; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        world = load_world(args.world) if args.world else default_world()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dc = DC(world, host=args.host, port=args.port, seed=args.seed, dc_id=args.dc_id)
    try:
        trio.run(_serve, dc, sys.stdout)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
