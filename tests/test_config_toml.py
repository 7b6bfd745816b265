"""`parse_toml`: a large config document read by rtoml gives what tomllib gives, and one
tomllib refuses is refused with tomllib's own error (no timing here: bench/scale.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mtpoold._config import RTOML_FROM_CHARS, load_config, parse_toml
from mtpoold._errors import ConfigError


def _fleet(accounts: int) -> str:
    lines = [
        '[telegram]\napi_id = 12345\napi_hash = "0123456789abcdef0123456789abcdef"\n',
        '[[proxies]]\nname = "de-1"\ntype = "socks5"\nhost = "10.0.0.1"\nport = 1080\n'
        'password = "pass\\"word"\nusername = "ü-user"\n',
    ]
    for i in range(accounts):
        lines.append(
            f'[[accounts]]\nid = "a{i}"\nsession_string = "1BVts{i:08d}"\nproxy = "de-1"\n'
            f"tags = [\"t{i % 7}\", 'lit']\n"
        )
    return "\n".join(lines)


def test_a_large_document_reads_as_tomllib_reads_it() -> None:
    text = _fleet(3000) + "\n[policy]\nbackoff_s = [10, 30.5, 6e1]\n"
    assert len(text) >= RTOML_FROM_CHARS  # the rtoml path
    assert parse_toml(text) == tomllib.loads(text)
    small = _fleet(3)
    assert len(small) < RTOML_FROM_CHARS
    assert parse_toml(small) == tomllib.loads(small)


@pytest.mark.parametrize(
    "tail",
    [
        '[[accounts]]\nid = "a1"\nid = "a2"\n',  # a key twice
        "[telegram]\napi_id = 1\n",  # a table twice
        "huge = 99999999999999999999999\n",  # past 64 bits: tomllib reads it, rtoml cannot
        'bad = "unterminated\n',
    ],
)
def test_a_large_document_tomllib_refuses_or_reads_is_tomllibs_answer(tail: str) -> None:
    text = _fleet(3000) + "\n" + tail
    try:
        expected: object = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        with pytest.raises(tomllib.TOMLDecodeError) as caught:
            parse_toml(text)
        assert str(caught.value) == str(exc)
    else:
        assert parse_toml(text) == expected


def test_load_config_of_a_large_file_names_tomllibs_error(tmp_path: Path) -> None:
    path = tmp_path / "mtpoold.toml"
    path.write_text(_fleet(3000) + "\n[telegram]\napi_id = 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: invalid TOML (")
    assert "telegram" in problem or "line" in problem
