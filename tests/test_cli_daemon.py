"""The CLI against a real ``mtpoold run`` process: ``state_dir/daemon.json`` says where the
daemon listens, so ``reload`` (and every client command) reaches it after ``daemon.listen``
was edited in the file; a misspelt TL function gets its suggestion through the daemon."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from mtpoold._cli import main
from mtpoold.testing import DC

from _daemonproc import daemon_process, free_port


def _config(tmp_path: Path, listen: str) -> Path:
    path = tmp_path / "mtpoold.toml"
    session = DC(port=1).session_string("15550000001")  # no DC: nothing connects at start
    path.write_text(
        f'[daemon]\nlisten = "{listen}"\nstate_dir = "{tmp_path}/state"\n\n'
        '[telegram]\ndc_host = "127.0.0.1"\ndc_port = 1\n\n'
        f'[[accounts]]\nid = "a1"\napi_id = 1\napi_hash = "{"ab" * 16}"\n'
        f'session_string = "{session}"\n'
    )
    path.chmod(0o600)
    return path


def test_reload_after_editing_daemon_listen_reaches_the_running_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MTPOOLD_CONFIG", "MTPOOLD_URL", "MTPOOLD_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    old, new = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = _config(tmp_path, old)
    daemon_file = tmp_path / "state" / "daemon.json"
    with daemon_process(config, tmp_path / "daemon.log") as proc:
        written = json.loads(daemon_file.read_text())
        assert (written["address"], written["pid"]) == (old, proc.pid)
        assert daemon_file.stat().st_mode & 0o777 == 0o600
        # a misspelt TL function: the daemon's error names the one meant (exit 2)
        assert main(["call", "messages.GetHistry", '{"peer": "@x", "limit": 1}']) == 2
        captured = capsys.readouterr()
        hint = "did you mean messages.GetHistory?"
        assert hint in json.loads(captured.out)["error"]["message"]
        assert captured.err.endswith(f"{hint}\n")
        # daemon.listen edited: the daemon still listens on the old address until a restart
        config.write_text(config.read_text().replace(old, new))
        assert main(["reload"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(f"reloaded {config}: config #2")
        assert (
            f"note: daemon.listen changed ({old} -> {new}): the daemon keeps listening on {old}"
            " until it restarts"
        ) in out
        assert main(["status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["accounts_total"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    # a clean stop removes the file; the clients fall back to daemon.listen (nobody there)
    assert not daemon_file.exists()
    assert main(["status"]) == 3
    assert capsys.readouterr().err.startswith(f"daemon unreachable: cannot connect to ws://{new}/")


def test_a_daemon_file_of_a_dead_daemon_is_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtpoold._daemonfile import remove_daemon_file, running_daemon_address, write_daemon_file

    state = tmp_path / "state"
    state.mkdir()
    assert running_daemon_address(state) is None
    write_daemon_file(state, "127.0.0.1:1")
    assert running_daemon_address(state) == "127.0.0.1:1"  # this process: alive
    remove_daemon_file(state, pid=os.getpid() + 1)  # not ours: kept
    assert running_daemon_address(state) == "127.0.0.1:1"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits at once
        os._exit(0)
    os.waitpid(pid, 0)
    write_daemon_file(state, "127.0.0.1:2", pid=pid)  # a pid that is no longer alive
    assert running_daemon_address(state) is None
    (state / "daemon.json").write_text("{not json")
    assert running_daemon_address(state) is None
    remove_daemon_file(state)  # unreadable: left alone, never raises
