"""The bearer token file (`mtpoold._token`): created once, mode 0600; errors name the path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mtpoold._token import TokenError, ensure_token, is_private, read_token


def test_ensure_token_creates_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token, created = ensure_token(path)
    assert created and len(token) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert is_private(path)
    assert ensure_token(path) == (token, False)
    assert read_token(path) == token


def test_read_token_errors_name_the_path_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "token"
    with pytest.raises(TokenError, match=r"does not exist"):
        read_token(path)
    path.write_text("two words\n")
    with pytest.raises(TokenError, match=r"does not hold a token") as caught:
        read_token(path)
    assert "two words" not in str(caught.value)
    path.write_text("\n")
    with pytest.raises(TokenError, match=r"does not hold a token"):
        ensure_token(path)


def test_read_token_of_a_device_or_binary_file_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """``--token-file /dev/zero`` read forever (and without bound) before."""
    with pytest.raises(TokenError, match=r"/dev/zero does not hold a token"):
        read_token(Path("/dev/zero"))
    path = tmp_path / "token"
    path.write_bytes(b"abc\x00def\n")
    with pytest.raises(TokenError, match=r"does not hold a token"):
        read_token(path)
    path.write_text("x" * 5000)
    with pytest.raises(TokenError, match=r"does not hold a token"):
        read_token(path)
