from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import attrs
import pytest

from mtpoold._secrets import (
    REDACTED,
    SecretUnavailable,
    create_private_file,
    ensure_private_dir,
    ensure_private_file,
    load_string_session,
    redact,
    warn_if_exposed,
)

SESSION = "1" + base64.urlsafe_b64encode(os.urandom(260)).decode()


@attrs.frozen(kw_only=True)
class Acc:
    id: str = "acc-1"
    session_string: str | None = None
    session_string_env: str | None = None
    session_credential: str | None = None


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- files and directories ---------------------------------------------------------------------


def test_create_private_file_mode_and_dir(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "secret.bin"
    create_private_file(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700


def test_create_private_file_refuses_existing_and_symlink(tmp_path: Path) -> None:
    existing = tmp_path / "f"
    existing.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        create_private_file(existing, b"new")
    assert existing.read_bytes() == b"old"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        create_private_file(link, b"new")
    assert not (tmp_path / "elsewhere").exists()


def test_create_private_file_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        create_private_file(tmp_path / "d" / "f", b"x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "d" / "f") == 0o600
    assert mode(tmp_path / "d") == 0o700


def test_ensure_private_dir_tightens_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, 0o755)
    with caplog.at_level(logging.WARNING):
        ensure_private_dir(d)
    assert mode(d) == 0o700
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert str(d) in caplog.records[0].getMessage()
    assert "0755" in caplog.records[0].getMessage()


def test_ensure_private_dir_quiet_when_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    with caplog.at_level(logging.WARNING):
        ensure_private_dir(d)
    assert caplog.records == []


def test_ensure_private_dir_leaves_sticky_shared_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "tmpish"
    d.mkdir()
    os.chmod(d, 0o1777)
    with caplog.at_level(logging.WARNING):
        ensure_private_dir(d)
    assert mode(d) == 0o1777
    assert "event=directory_shared" in caplog.text and "not tightening" in caplog.text


def test_ensure_private_dir_rejects_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(NotADirectoryError):
        ensure_private_dir(f)


def test_ensure_private_file_tightens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "f"
    f.write_text("")
    os.chmod(f, 0o644)
    with caplog.at_level(logging.WARNING):
        assert ensure_private_file(f, "state store") is True
    assert mode(f) == 0o600
    (record,) = caplog.records
    assert record.getMessage().startswith("event=file_exposed ")
    written = {k: v for k, v in record.msg.fields.items() if v is not None}  # None: left out
    assert "error=" not in record.getMessage()
    assert written == {
        "what": "state store",
        "path": str(f),
        "mode": "0644",
        "tightened": True,
        "new_mode": "0600",
    }
    assert ensure_private_file(f, "state store") is False
    assert ensure_private_file(tmp_path / "missing", "state store") is False


def test_warn_if_exposed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "acc.session"
    f.write_text("")
    os.chmod(f, 0o600)
    with caplog.at_level(logging.WARNING):
        assert warn_if_exposed(f, "session file") is False
        assert caplog.records == []
        os.chmod(f, 0o640)
        assert warn_if_exposed(f, "session file") is True
    assert mode(f) == 0o640  # warned, not changed
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith('event=secrets_exposed what="session file"')
    assert record.msg.fields["path"] == str(f) and record.msg.fields["mode"] == "0640"
    assert warn_if_exposed(tmp_path / "missing", "session file") is False


def test_warn_if_exposed_accepts_the_service_group_for_the_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "mtpoold.toml"
    config.write_text("")
    os.chown(config, -1, os.getegid())
    os.chmod(config, 0o640)  # root:mtpoold 0640, as systemd/mtpoold.service installs it
    with caplog.at_level(logging.WARNING):
        assert warn_if_exposed(config, "config file", allow_own_group=True) is False
        os.chmod(config, 0o644)
        assert warn_if_exposed(config, "config file", allow_own_group=True) is True


# -- string sessions ---------------------------------------------------------------------------


def test_load_string_session_none_configured() -> None:
    assert load_string_session(Acc(), environ={}) is None


def test_load_string_session_inline() -> None:
    assert load_string_session(Acc(session_string=f" {SESSION}\n"), environ={}) == SESSION


def test_load_string_session_env() -> None:
    acc = Acc(session_string_env="ACC1_SESSION")
    assert load_string_session(acc, environ={"ACC1_SESSION": SESSION + "\n"}) == SESSION


def test_load_string_session_env_missing() -> None:
    acc = Acc(session_string_env="ACC1_SESSION")
    with pytest.raises(
        SecretUnavailable,
        match=r'^account "acc-1": environment variable ACC1_SESSION \(session_string_env\) '
        r"is not set$",
    ) as info:
        load_string_session(acc, environ={"OTHER": SESSION})
    assert info.value.account_id == "acc-1"


def test_load_string_session_env_empty_never_shows_value() -> None:
    acc = Acc(session_string_env="ACC1_SESSION")
    with pytest.raises(SecretUnavailable, match=r"^account \"acc-1\": .* is empty$"):
        load_string_session(acc, environ={"ACC1_SESSION": "  \n"})


def test_load_string_session_credential(tmp_path: Path) -> None:
    (tmp_path / "acc1").write_text(SESSION + "\n")
    acc = Acc(session_credential="acc1")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_string_session(acc, environ=env) == SESSION


def test_load_string_session_credential_dir_unset() -> None:
    acc = Acc(session_credential="acc1")
    with pytest.raises(
        SecretUnavailable,
        match=r"^account \"acc-1\": session_credential 'acc1' needs \$CREDENTIALS_DIRECTORY, "
        r"which is not set \(use LoadCredential=acc1:/path/to/file in the systemd unit\)$",
    ):
        load_string_session(acc, environ={})


def test_load_string_session_credential_dir_missing(tmp_path: Path) -> None:
    acc = Acc(session_credential="acc1")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "nope")}
    with pytest.raises(SecretUnavailable, match=r"^account \"acc-1\": .* is not a directory$"):
        load_string_session(acc, environ=env)


def test_load_string_session_credential_file_missing(tmp_path: Path) -> None:
    acc = Acc(session_credential="acc1")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    with pytest.raises(
        SecretUnavailable,
        match=rf"^account \"acc-1\": credential file {tmp_path}/acc1 does not exist$",
    ):
        load_string_session(acc, environ=env)


def test_load_string_session_credential_empty(tmp_path: Path) -> None:
    (tmp_path / "acc1").write_text("\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    with pytest.raises(SecretUnavailable, match=r"is empty$"):
        load_string_session(Acc(session_credential="acc1"), environ=env)


@pytest.mark.parametrize("name", ["../acc1", "a/b", "..", ""])
def test_load_string_session_credential_name_must_be_plain(tmp_path: Path, name: str) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    with pytest.raises(SecretUnavailable, match=r"must be a plain file name"):
        load_string_session(Acc(session_credential=name), environ=env)


def test_load_string_session_rejects_two_sources() -> None:
    acc = Acc(session_string=SESSION, session_string_env="X")
    with pytest.raises(
        SecretUnavailable,
        match=r"^account \"acc-1\": set only one of session_string, session_string_env$",
    ) as info:
        load_string_session(acc, environ={"X": SESSION})
    assert SESSION not in str(info.value)


# -- redact ------------------------------------------------------------------------------------


def test_redact_known_secrets() -> None:
    text = "proxy login hunter2pass failed; api_hash=abc123XYZ"
    assert redact(text, ["hunter2pass", "abc123XYZ", None]) == (
        f"proxy login {REDACTED} failed; api_hash={REDACTED}"
    )


def test_redact_longest_secret_first() -> None:
    assert redact("key=secretsecret2", ["secret", "secretsecret2"]) == f"key={REDACTED}"


def test_redact_skips_tiny_and_empty_secrets() -> None:
    assert redact("a cat", ["", "a", "cat"]) == "a cat"


def test_redact_hex_runs() -> None:
    api_hash = "0123456789abcdef0123456789abcdef"
    assert redact(f"hash {api_hash}.", []) == f"hash {REDACTED}."
    assert redact(f"0x{api_hash.upper()}", []) == REDACTED
    assert redact("short deadbeef", []) == "short deadbeef"


def test_redact_base64_runs() -> None:
    assert redact(f"session={SESSION} end", []) == f"session={REDACTED} end"
    key = base64.b64encode(bytes(range(200, 256))).decode()
    assert redact(f"auth key {key}", []) == f"auth key {REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "AUTH_KEY_UNREGISTERED_AND_SOMETHING_VERY_LONG_INDEED",
        "FLOOD_WAIT_37 (caused by messages.GetHistoryRequest)",
        "test_redact_leaves_ordinary_long_identifiers_alone_please",
        "/var/lib/mtpoold/state/accounts/acc-3.session",
        "Connection to 10.0.0.1:1080 closed",
    ],
)
def test_redact_leaves_ordinary_text(text: str) -> None:
    assert redact(text) == text


def test_redact_is_the_one_in_errors() -> None:
    from mtpoold import _errors

    assert redact is _errors.redact and REDACTED == _errors.REDACTED == "[redacted]"
    assert redact("x " * 600, limit=None) == "x " * 599 + "x"
