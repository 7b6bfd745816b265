"""Submit a batch of jobs to a running mtpoold over its websocket (JSON-RPC 2.0) and print them.

    python examples/submit_jobs.py --config mtpoold.toml [--job-file jobs.json]

The daemon's address comes from ``[daemon] listen`` in the config and the bearer token from
``<state_dir>/token`` (written 0600 by the daemon at first start). All requests are sent at
once on one connection; replies arrive in completion order, matched back by ``id``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from mtpoold import load_config

#: The order checks the PHP jobs used to make, as JSON-RPC calls.
DEFAULT_JOBS: list[dict[str, Any]] = [
    {"method": "resolve", "params": {"link_or_username": "@example_news"}},
    {"method": "resolve", "params": {"link_or_username": "https://t.me/example_group"}},
    {"method": "resolve", "params": {"link_or_username": "ada_example"}},
    {"method": "get_messages", "params": {"peer": "@example_news", "ids": [1, 2, 3, 999]}},
    {"method": "invoke", "params": {"method": "help.GetConfig", "args": {}}},
    {
        "method": "invoke",
        "params": {"method": "contacts.ResolveUsername", "args": {"username": "grace_example"}},
    },
    {"method": "resolve", "params": {"link_or_username": "@nobody_by_that_name"}},
]


def _summary(reply: dict[str, Any]) -> str:
    if "error" in reply:
        err = reply["error"]
        data = err.get("data") or {}
        return f"error {err['code']} {data.get('class', '')}: {err['message']}"
    result = reply["result"]
    meta = result.get("meta", {})
    body = result.get("result", result)
    if isinstance(body, dict) and "kind" in body:
        text = f"{body['kind']} id={body['id']} @{body.get('username')} " + (
            f"title={body.get('title') or body.get('name')!r} "
            f"members={body.get('participants_count')}"
        )
    elif isinstance(body, dict) and body and all(k.isdigit() for k in body):
        text = ", ".join(  # get_messages: {message id: summary}
            f"#{k}: " + (f"views={v.get('views')}" if v.get("exists") else "missing")
            for k, v in body.items()
        )
    else:
        text = f"{body.get('_', type(body).__name__)}" if isinstance(body, dict) else str(body)
    return f"ok via {meta.get('account')} ({meta.get('elapsed_ms', 0):.0f} ms): {text}"


async def submit(url: str, token: str, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send ``jobs`` pipelined on one connection; return the replies in request order."""
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    replies: dict[int, dict[str, Any]] = {}
    async with open_websocket_url(url, extra_headers=headers) as ws:
        for i, job in enumerate(jobs, start=1):
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": i, **job}))
        while len(replies) < len(jobs):
            reply = json.loads(await ws.get_message())
            replies[reply["id"]] = reply
    return [replies[i] for i in range(1, len(jobs) + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("mtpoold.toml"))
    parser.add_argument("--job-file", type=Path, help="a JSON list of {method, params}")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    listen = config.daemon.listen
    if listen.startswith("unix:"):
        print("this example speaks TCP; set [daemon] listen to host:port", file=sys.stderr)
        return 2
    token = (Path(config.daemon.state_dir) / "token").read_text().strip()
    jobs = json.loads(args.job_file.read_text()) if args.job_file else DEFAULT_JOBS
    t0 = time.perf_counter()
    replies = trio.run(submit, f"ws://{listen}/", token, jobs)
    elapsed = time.perf_counter() - t0
    for job, reply in zip(jobs, replies, strict=True):
        target = next(iter(job["params"].values()), "")
        print(f"{job['method']:>13} {str(target)[:32]:<32} -> {_summary(reply)}")
    ok = sum(1 for r in replies if "result" in r)
    print(f"{ok}/{len(replies)} jobs succeeded in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
