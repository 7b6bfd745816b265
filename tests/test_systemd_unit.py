"""systemd/mtpoold.service: accepted by `systemd-analyze verify`, and says what we promise."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "mtpoold.service"
#: Where README's production install puts the program (a venv of its own) and its README.
VENV = "/opt/mtpoold"
INSTALLED_BINARY = f"{VENV}/bin/mtpoold"
INSTALLED_README = f"{VENV}/share/doc/mtpoold/README.md"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_promises() -> None:
    s = _settings()
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -s HUP $MAINPID",
        "KillMode": "mixed",
        "StateDirectory": "mtpoold",
        "StateDirectoryMode": "0700",
        "RuntimeDirectory": "mtpoold",
        "ConfigurationDirectory": "mtpoold",
        "User": "mtpoold",
        "Group": "mtpoold",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], key
    assert "@system-service" in s["SystemCallFilter"]
    assert s["ExecStart"] == [f"{INSTALLED_BINARY} run --config /etc/mtpoold/mtpoold.toml"]
    assert "TimeoutStopSec" in s


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n### {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def test_unit_and_readme_agree_on_the_install() -> None:
    """The unit runs the binary README's production install creates, and its
    Documentation= is a file that install puts there (no placeholder URL)."""
    s = _settings()
    section = _readme_section("systemd")
    assert f"python3 -m venv {VENV} && {VENV}/bin/pip install ." in section
    assert f"install -D -m 0644 README.md {INSTALLED_README}" in section
    assert s["ExecStart"][0].split()[0] == INSTALLED_BINARY
    assert s["ExecStart"][0] in section  # README quotes the unit's ExecStart
    [documentation] = s["Documentation"]
    assert documentation == f"file:{INSTALLED_README}"
    assert "/usr/local/bin/mtpoold run" not in UNIT.read_text()
    # README's other production commands use the same config path
    config = s["ExecStart"][0].split("--config ", 1)[1]
    assert f"mtpoold run --config {config}" in (ROOT / "README.md").read_text()
    # the install lines of the unit's header comment are README's, word for word
    header = [
        line.removeprefix("#").strip()
        for line in UNIT.read_text().splitlines()
        if line.startswith("#           ")
    ]
    for line in header:
        assert line in section, line


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this venv's real entry point.
    binary = Path(sys.executable).parent / "mtpoold"
    assert binary.exists(), "the project is not installed in this environment (pip install -e .)"
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    unit = tmp_path / "mtpoold.service"
    unit.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "mtpoold.service" not in proc.stderr, proc.stderr  # no warnings about our unit


def test_unit_puts_session_locks_where_every_process_on_the_host_meets_them() -> None:
    """PrivateTmp=yes gives the service its own /tmp: session locks there would not meet
    ``sudo -u mtpoold mtpoold authorize``. They live in /run/mtpoold/locks instead, made at
    boot by the tmpfiles entry and kept across stops."""
    s = _settings()
    assert "MTPOOLD_LOCK_DIR=/run/mtpoold/locks" in s["Environment"]
    assert s["RuntimeDirectory"] == ["mtpoold"]
    assert s["RuntimeDirectoryPreserve"] == ["yes"]
    tmpfiles = (UNIT.parent / "mtpoold.tmpfiles").read_text().splitlines()
    entries = [line.split() for line in tmpfiles if line and not line.startswith("#")]
    assert ["d", "/run/mtpoold", "0750", "mtpoold", "mtpoold", "-"] in entries
    assert ["d", "/run/mtpoold/locks", "0700", "mtpoold", "mtpoold", "-"] in entries


def test_lock_dir_order_env_then_run_mtpoold_of_this_user(tmp_path: Path) -> None:
    import os

    from mtpoold._sessionlock import runtime_lock_dir

    explicit = tmp_path / "explicit"
    assert runtime_lock_dir({"MTPOOLD_LOCK_DIR": str(explicit)}) == explicit
    assert os.stat(explicit).st_mode & 0o777 == 0o700
    system = tmp_path / "run-mtpoold"
    system.mkdir()
    system.chmod(0o750)  # whatever umask an earlier test left
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    got = runtime_lock_dir({"XDG_RUNTIME_DIR": str(xdg)}, system_dir=system)
    assert got == system / "locks"  # the service user's /run/mtpoold wins over XDG
    assert os.stat(system).st_mode & 0o777 == 0o750  # its mode is the unit's (socket group)
    missing = tmp_path / "absent"
    got = runtime_lock_dir({"XDG_RUNTIME_DIR": str(xdg)}, system_dir=missing)
    assert got == xdg / "mtpoold" / "locks"
