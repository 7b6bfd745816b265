"""The PHP example client (examples/php/) against a real daemon with Debian's ``php``:
resolve, get_messages, a raw invoke, an error reply, and a FLOOD_WAIT retried after the
daemon's retry_after_s."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import trio

from mtpoold.testing.dc import rpc_error

from _daemonproc import dc_daemon

ROOT = Path(__file__).resolve().parent.parent
PHP = shutil.which("php")

pytestmark = pytest.mark.skipif(
    PHP is None, reason="php is not installed (Debian: apt-get install php-cli; .ci/run does)"
)


async def test_php_example_client_against_a_real_daemon(tmp_path: Path) -> None:
    assert PHP is not None
    with trio.fail_after(90):
        async with dc_daemon(tmp_path) as (config, dc):
            listen = next(
                line.split('"')[1] for line in config.read_text().splitlines()
                if line.startswith("listen = ")
            )  # fmt: skip
            # the first resolve meets a FLOOD_WAIT of 3 s, past its 2 s deadline: the example
            # waits the retry_after_s of the error and tries again
            flood = dc.faults.add(rpc_error(420, "FLOOD_WAIT_3"), method="contacts.ResolveUsername")
            proc = await trio.run_process(
                [PHP, str(ROOT / "examples" / "php" / "example.php"), f"http://{listen}",
                 str(tmp_path / "state" / "token"), "@mtpoold_news"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            out, err = proc.stdout.decode(), proc.stderr.decode()
            assert proc.returncode == 0, out + err
            assert flood.remaining == 0
            lines = out.splitlines()
            retry = re.fullmatch(
                r"FLOOD_WAIT \(code -32001\), retry_after_s=([\d.]+): retrying", lines[0]
            )
            assert retry is not None and 0 < float(retry[1]) <= 3, out
            assert lines[1] == "resolve @mtpoold_news: channel id=2001 title=mtpoold News via acc"
            assert "message #1: views=1000" in lines
            assert "message #2: views=2000" in lines
            assert "message #99: missing" in lines
            assert "invoke help.GetConfig: Config this_dc=2" in out, out
            assert "resolve @nobody_by_that_name: error -32001 PEER_NOT_FOUND (HTTP 200)" in lines
            assert "status: 1 account(s)" in lines
            assert lines[-4:-1] == ["batch #0: ok via acc", "batch #1: ok via acc",
                                    "batch #2: error -32602 INVALID_ARGUMENT"], out  # fmt: skip
            # getMessages of a message link without ids: the link's own id (ids left out)
            script = (
                f"require {str(ROOT / 'examples' / 'php' / 'MtpooldClient.php')!r};"
                f"$c = MtpooldClient::fromTokenFile('http://{listen}',"
                f" {str(tmp_path / 'state' / 'token')!r});"
                "echo json_encode(array_keys($c->getMessages('https://t.me/mtpoold_news/2')"
                "['result']));"
            )
            proc = await trio.run_process(
                [PHP, "-r", script], capture_stdout=True, capture_stderr=True, check=False
            )
            assert (proc.returncode, proc.stdout) == (0, b"[2]"), proc.stdout + proc.stderr
            # a wrong token: the refusal's JSON-RPC body, as an MtpooldError
            (tmp_path / "bad-token").write_text("not-the-token\n")
            proc = await trio.run_process(
                [PHP, str(ROOT / "examples" / "php" / "example.php"), f"http://{listen}",
                 str(tmp_path / "bad-token")],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert proc.returncode == 1
            assert proc.stderr.decode().startswith("mtpoold error -32600 UNAUTHORIZED:")
    # no daemon there any more
    proc = await trio.run_process(
        [PHP, str(ROOT / "examples" / "php" / "example.php"), f"http://{listen}",
         str(tmp_path / "bad-token")],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith(
        f"mtpoold unreachable: no reply from http://{listen}/rpc"
    )
