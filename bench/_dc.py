"""The loopback DC (``mtpoold.testing.dc``) in its own process, with a world of N users.

The DC runs in a separate interpreter so that its CPU is not counted as the client's and so
that native asyncio Telethon (scenario 5) can talk to it. Session strings are derived in the
caller from the same world, seed and port (``DC.session_string`` needs no running server).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs

from ._common import ROOT, child_command

FIRST_USER_ID: Final = 100_001


def world_toml(users: int) -> str:
    lines = []
    for i in range(users):
        lines += [
            "[[users]]",
            f"id = {FIRST_USER_ID + i}",
            f"access_hash = {7_000_000 + i}",
            f'first_name = "Bench {i}"',
            f'username = "bench_user_{i}"',
            f'phone = "1999{i:07d}"',
            "",
        ]
    return "\n".join(lines)


def user_ids(users: int) -> list[int]:
    return [FIRST_USER_ID + i for i in range(users)]


def serve(world_path: str, port_file: str) -> None:
    """Child entry point: run the DC until killed, forgetting its call log every second."""
    import trio

    from mtpoold.testing.dc import DC, load_world

    async def main() -> None:
        dc = DC(load_world(world_path))
        async with trio.open_nursery() as nursery:
            await nursery.start(dc.serve)
            await trio.Path(port_file).write_text(str(dc.port))
            while True:
                await trio.sleep(1)
                dc.calls.clear()

    trio.run(main)


@attrs.define
class RunningDC:
    host: str
    port: int
    pid: int
    world_path: str
    users: int
    public_key_pem: str

    def session_strings(self, count: int | None = None) -> list[str]:
        """Telethon StringSessions logged in as the world's first ``count`` users."""
        return session_strings(self.world_path, self.port, count or self.users)

    def telegram_config(self) -> dict[str, Any]:
        return {
            "dc_id": 2,
            "dc_host": self.host,
            "dc_port": self.port,
            "rsa_keys": [self.public_key_pem],
        }


def session_strings(world_path: str, port: int, count: int) -> list[str]:
    from mtpoold.testing.dc import DC, load_world

    dc = DC(load_world(world_path), port=port)
    return [dc.session_string(uid) for uid in user_ids(count)]


def public_key_pem() -> str:
    from mtpoold.testing.dc import DC, World

    return DC(World()).public_key_pem


@contextmanager
def dc_process(users: int) -> Iterator[RunningDC]:
    """Run a DC with ``users`` users in a child process for the ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="mtpoold-bench-dc-") as tmp:
        world = Path(tmp) / "world.toml"
        world.write_text(world_toml(users))
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen(
            child_command("bench._dc:serve", world_path=str(world), port_file=str(port_file)),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"loopback DC did not start: {err[-2000:]}")
                time.sleep(0.05)
            yield RunningDC(
                "127.0.0.1",
                int(port_file.read_text()),
                proc.pid,
                str(world),
                users,
                public_key_pem(),
            )
        finally:
            proc.kill()
            proc.wait(10)
            if proc.stderr is not None:
                proc.stderr.close()


if __name__ == "__main__":  # pragma: no cover - manual use
    with dc_process(int(sys.argv[1]) if len(sys.argv) > 1 else 4) as dc:
        print(dc)
        time.sleep(3600)
