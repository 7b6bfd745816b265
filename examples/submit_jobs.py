"""Submit a batch of jobs to a running mtpoold with `mtpoold.client` and print the replies.

    python examples/submit_jobs.py --config mtpoold.toml [--job-file jobs.json]

`Client.discover` finds the daemon as the ``mtpoold`` CLI does: ``[daemon] listen`` of the
config and the bearer token in ``<state_dir>/token`` (written 0600 by the daemon at first
start). The jobs go in one HTTP POST (a JSON-RPC batch) and run at once in the daemon; each
reply is a result or an `RpcError` (code, ``error_class``, ``retry_after_s``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mtpoold.client import Client, ClientError, RpcError, TokenError

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


def _summary(reply: Any) -> str:
    if isinstance(reply, RpcError):
        return f"error {reply.code} {reply.error_class}: {reply.message}"
    meta = reply.get("meta", {})
    body = reply.get("result", reply)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("mtpoold.toml"),
        help="the daemon's config: where it listens and its token (default ./mtpoold.toml)",
    )
    parser.add_argument("--job-file", type=Path, help="a JSON list of {method, params}")
    args = parser.parse_args(argv)
    jobs = json.loads(args.job_file.read_text()) if args.job_file else DEFAULT_JOBS
    try:
        client = Client.discover(args.config)
        t0 = time.perf_counter()
        replies = client.batch([(job["method"], job.get("params")) for job in jobs])
    except (ClientError, TokenError, ValueError, OSError) as exc:
        print(f"submit_jobs: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - t0
    for job, reply in zip(jobs, replies, strict=True):
        target = next(iter(job.get("params", {}).values()), "")
        print(f"{job['method']:>13} {str(target)[:32]:<32} -> {_summary(reply)}")
    ok = sum(1 for r in replies if not isinstance(r, RpcError))
    print(f"{ok}/{len(replies)} jobs succeeded in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
