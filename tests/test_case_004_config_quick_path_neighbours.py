"""Neighbours of the shared config cases (004's kind: a bad value in a plain [[proxies]] /
[[accounts]] entry must give the same problem line as before the quick path, never an
internal error) on the quick construction path (`mtpoold._config._quick_entry`).

Found while checking the shared cases: an integer too large for a float in a float field of
a plain entry (``[[proxies]] interval_s``) raises ``OverflowError`` out of
`Structurer.quick_fields` (its float check calls ``float(v)`` outside ``_quick_entry``'s
``try``), so ``parse_config`` / ``mtpoold check-config`` / ``mtpoold run`` crash with an
internal error instead of reporting ``proxies[0].interval_s: ...`` (exit 2) as the full path
does. TOML integers reach this: ``tomllib`` reads integers of any size.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mtpoold._cli import main
from mtpoold._config import Config, parse_config
from mtpoold._errors import ConfigError

API_HASH = "0123456789abcdef0123456789abcdef"
HUGE = 10**400


def _doc(**proxy_kw: Any) -> dict[str, Any]:
    proxy = {"name": "de-1", "type": "socks5", "host": "10.0.0.1", "port": 1080, **proxy_kw}
    account = {"id": "a", "api_id": 1, "api_hash": API_HASH, "session_string": "s",
               "proxy": "de-1"}  # fmt: skip
    return {"proxies": [proxy], "accounts": [account]}


def _parse(data: dict[str, Any], base_dir: Path = Path("/etc/mtpoold")) -> Any:
    try:
        return parse_config(copy.deepcopy(data), base_dir=base_dir)
    except ConfigError as exc:
        return exc.problems


@pytest.mark.parametrize("value", [HUGE, -HUGE, 2**1024], ids=["1e400", "-1e400", "2**1024"])
def test_float_field_of_a_plain_entry_holding_a_huge_integer_is_a_problem_line(
    value: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _doc(interval_s=value)
    quick = _parse(data)  # today: OverflowError: int too large to convert to float
    assert isinstance(quick, tuple), quick
    assert quick and all(line.startswith("proxies[0].interval_s: ") for line in quick), quick
    monkeypatch.setattr("mtpoold._config._quick_entry", lambda *_a: None)
    assert quick == _parse(data)  # the full path's lines, as before the quick path


def test_check_config_huge_interval_s_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mtpoold.toml"
    path.write_text(
        "[[proxies]]\n"
        'name = "de-1"\ntype = "socks5"\nhost = "10.0.0.1"\nport = 1080\n'
        f"interval_s = 1{'0' * 400}\n"
        "[[accounts]]\n"
        f'id = "a"\napi_id = 1\napi_hash = "{API_HASH}"\nsession_string = "s"\nproxy = "de-1"\n'
    )
    code = main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert "internal error" not in err, err  # today: exit 1, "internal error: OverflowError"
    assert code == 2, err
    assert f"{path}: proxies[0].interval_s: " in err


def test_quick_path_session_with_base_dir_dot_as_the_full_path() -> None:
    """Minor: ``_under(Path("."), "a.session")`` is ``"./a.session"`` where the full path
    (``str(Path(".") / "a.session")``) gives ``"a.session"`` (`os.path.join` with
    ``str(Path(".")) == "."``). Python embedding calling ``parse_config(..., base_dir=Path("."))``
    gets another spelling of the session path than before the quick path."""
    data = {"accounts": [{"id": "a", "api_id": 1, "api_hash": API_HASH, "session": "a.session"}]}
    config = _parse(data, base_dir=Path("."))
    assert isinstance(config, Config), config
    assert config.accounts[0].session == str(Path(".") / "a.session")  # "a.session"


def test_check_config_session_path_with_a_nul_is_a_problem_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a quick-path regression (before it, ``parse_config`` itself raised ValueError):
    a ``session`` holding ``\\u0000`` (valid TOML) makes check-config exit 1 with ``internal
    error: ValueError: embedded null byte`` (raised in `_sessionid.session_identity` via
    `_startup.startup_problems`) instead of exit 2 naming ``accounts[0].session``."""
    path = tmp_path / "mtpoold.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[accounts]]\nid = "a"\napi_id = 1\napi_hash = "{API_HASH}"\n'
        'session = "a\\u0000b.session"\n'
    )
    code = main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert "internal error" not in err, err
    assert code == 2, err
    assert f"{path}: accounts[0].session: " in err
