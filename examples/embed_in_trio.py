"""The pool inside another Trio program, no daemon.

    python examples/embed_in_trio.py                 # against a loopback DC it starts itself
    python examples/embed_in_trio.py mtpoold.toml    # against your own fleet

Your program owns the nursery; the pool is one more thing living in it. Jobs are plain
``await pool.resolve(...)`` calls made from as many tasks as you like: the pool gates each
proxy, runs one call per account at a time, reroutes after FLOOD_WAITs and enforces deadlines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import mtpoold
from mtpoold.testing import load_world, open_dc

HERE = Path(__file__).resolve().parent
LOOKUPS = ["@example_news", "t.me/example_group", "@ada_example", "@grace_example", "@nobody_xyz"]


async def check_all(pool: mtpoold.Pool) -> None:
    """Resolve every name of LOOKUPS concurrently and print one line each."""

    async def check(name: str) -> None:
        try:
            result = await pool.resolve(name, deadline_s=30)
        except mtpoold.JobFailed as exc:
            print(f"{name:<22} {exc.error_class.value}: {exc.message[:60]}")
            return
        peer = result.value
        print(
            f"{name:<22} {peer['kind']:<10} {peer.get('title') or peer.get('name')!s:<16} "
            f"via {result.meta.account} in {result.meta.elapsed_ms:.0f} ms"
        )

    async with trio.open_nursery() as nursery:
        for name in LOOKUPS:
            nursery.start_soon(check, name)


async def main(argv: list[str]) -> None:
    if argv:
        async with mtpoold.open_pool(mtpoold.load_config(argv[0])) as pool:
            await check_all(pool)
        return
    async with open_dc(load_world(HERE / "world.toml")) as dc:
        config = mtpoold.parse_config(
            {
                "telegram": {
                    "dc_host": dc.host,
                    "dc_port": dc.port,
                    "rsa_keys": [dc.public_key_pem],
                },
                "proxies": [],
                "accounts": [
                    {
                        "id": f"acc-{i}",
                        "api_id": 1000 + i,
                        "api_hash": "ab" * 16,
                        "session_string": dc.session_string(phone),
                    }
                    for i, phone in enumerate(["15551230001", "15551230002"])
                ],
            },
            base_dir=Path.cwd(),
        )
        async with mtpoold.open_pool(config) as pool:
            await check_all(pool)
            stats = pool.statistics()
            print(
                f"{stats.jobs_ok} ok, {stats.jobs_failed} failed; "
                + ", ".join(f"{a.id}: {a.calls_ok} calls" for a in stats.accounts)
            )


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
