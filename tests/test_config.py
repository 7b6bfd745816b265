"""Tests for mtpoold._config: loading, one test per kind of bad config, helpers."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import attrs
import cattrs
import pytest

from mtpoold._config import (
    AccountConfig,
    Config,
    DirectConfig,
    PolicyConfig,
    ProxyConfig,
    TelegramConfig,
    TelegramOverrides,
    converter,
    load_config,
    parse_config,
    proxy_key,
)
from mtpoold._errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mtpoold.toml"
API_HASH = "0123456789abcdef0123456789abcdef"
PEM = "-----BEGIN RSA PUBLIC KEY-----\nMIIBCgKCAQEA\n-----END RSA PUBLIC KEY-----\n"


def proxy(**kw: Any) -> dict[str, Any]:
    return {"name": "de-1", "type": "socks5", "host": "10.0.0.1", "port": 1080, **kw}


def account(i: int = 0, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"acc-{i}",
        "api_id": 12345,
        "api_hash": API_HASH,
        "session": f"sessions/acc-{i}.session",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def doc(**kw: Any) -> dict[str, Any]:
    return {"proxies": [proxy()], "accounts": [account(0, proxy="de-1"), account(1)], **kw}


def problems(data: dict[str, Any], base_dir: Path = Path("/etc/mtpoold")) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=base_dir)
    return info.value.problems


# --- happy path -----------------------------------------------------------------------------------


def test_load_config_example(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    assert [p.name for p in config.proxies] == ["de-1", "nl-1", "office-http"]
    assert [p.type for p in config.proxies] == ["socks5", "socks5", "http"]
    assert [a.id for a in config.accounts] == ["acc-de-1a", "acc-de-1b", "acc-nl-1", "acc-direct"]
    direct = config.accounts[3]
    assert config.proxy_for(direct) is None
    assert config.proxy_for(config.accounts[0]) is config.proxies[0]
    assert config.accounts[0].session == str(EXAMPLE.parent / "sessions" / "acc-de-1a.session")
    assert config.daemon.state_dir == str(EXAMPLE.parent / "state")


def test_load_config_example_covers_every_key() -> None:
    text = EXAMPLE.read_text()
    for cls in (ProxyConfig, TelegramConfig, AccountConfig, PolicyConfig, DirectConfig):
        for f in attrs.fields(cls):
            if f.name == "telegram":  # a table: [accounts.telegram], checked below
                continue
            assert re.search(rf"^#?\s*{f.name} =", text, re.M), f"{cls.__name__}.{f.name}"
    assert "[accounts.telegram]" in text


def test_parse_config_minimal_defaults() -> None:
    config = parse_config({}, base_dir=Path("/srv"))
    assert config == Config(
        daemon=attrs.evolve(Config().daemon, state_dir="/srv/state"),
        proxies=(),
        accounts=(),
    )
    assert config.policy.backoff_s == (10.0, 30.0, 60.0, 120.0, 300.0)
    assert config.telegram.dc_id == 2


def test_parse_config_direct_lane() -> None:
    config = parse_config({"direct": {"capacity": 3, "interval_s": 0.5}}, base_dir=Path("/x"))
    assert (config.direct.capacity, config.direct.interval_s) == (3, 0.5)
    assert parse_config({}, base_dir=Path("/x")).direct == DirectConfig(capacity=1, interval_s=2.0)
    with pytest.raises(ConfigError) as info:
        parse_config({"direct": {"capacity": 0, "rate": 1}}, base_dir=Path("/x"))
    assert info.value.problems == (
        "direct.rate: unknown key",
        "direct.capacity: expected an integer >= 1, got 0",
    )


def test_parse_config_interval_s_is_exact_to_the_millisecond() -> None:
    data = doc(
        proxies=[
            proxy(name="a", interval_s=0.5),
            proxy(name="b", interval_s=1.5),
            proxy(name="c", interval_s=2),
            proxy(name="d", interval_s=0.001),
        ]
    )
    data["accounts"] = [account(0)]
    config = parse_config(data, base_dir=Path("/x"))
    assert [p.interval_s for p in config.proxies] == [0.5, 1.5, 2.0, 0.001]
    assert all(type(p.interval_s) is float for p in config.proxies)
    assert [round(p.interval_s * 1000) for p in config.proxies] == [500, 1500, 2000, 1]


def test_parse_config_session_paths_relative_to_base_dir() -> None:
    data = doc()
    data["accounts"][1]["session"] = "/var/lib/mtpoold/b.session"
    config = parse_config(data, base_dir=Path("/etc/mtpoold"))
    assert config.accounts[0].session == "/etc/mtpoold/sessions/acc-0.session"
    assert config.accounts[1].session == "/var/lib/mtpoold/b.session"


def test_Config_telegram_for_merges_overrides(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "test.pem").write_text(PEM)
    data = doc(telegram={"dc_id": 4, "test_mode": True, "rsa_keys": [PEM]})
    data["accounts"][0]["telegram"] = {"dc_port": 80, "rsa_keys": ["keys/test.pem"]}
    config = parse_config(data, base_dir=tmp_path)
    merged = config.telegram_for(config.accounts[0])
    assert merged == TelegramConfig(dc_id=4, dc_port=80, test_mode=True, rsa_keys=(PEM,))
    assert config.telegram_for(config.accounts[1]) is config.telegram
    assert config.accounts[0].telegram == TelegramOverrides(dc_port=80, rsa_keys=(PEM,))


def test_Config_proxy_for_unknown_raises_KeyError() -> None:
    config = parse_config(doc(), base_dir=Path("/x"))
    stray = attrs.evolve(config.accounts[1], proxy="nowhere")
    with pytest.raises(KeyError):
        config.proxy_for(stray)


# --- secrets --------------------------------------------------------------------------------------


def test_secrets_never_in_repr() -> None:
    data = doc(
        proxies=[
            proxy(password="hunter2-proxy"),
            proxy(name="mt", type="mtproxy", secret="dd0123456789abcdef0123456789abcdef"),
        ]
    )
    data["accounts"][1] = account(1, session=None, session_string="1BVtsOKkBu7Q2wGqz3x9lK1L")
    config = parse_config(data, base_dir=Path("/x"))
    text = repr(config) + str(config)
    for secret in ("hunter2-proxy", "dd0123456789abcdef", API_HASH, "1BVtsOKkBu7Q2wGqz3x9lK1L"):
        assert secret not in text
    assert config.proxies[0].password == "hunter2-proxy"  # still there, only not shown


def test_secrets_never_in_problems() -> None:
    data = doc(proxies=[proxy(password=12345678, secret=["s3cr3t"])])
    data["accounts"][0]["api_hash"] = "abcdefg"
    data["accounts"][1] = account(1, api_hash=98765, session=None, session_string=7)
    assert problems(data) == (
        "proxies[0].password: expected a string, got an integer",
        "proxies[0].secret: expected a string, got an array",
        "accounts[0].api_hash: expected 32 hexadecimal characters, got a string of 7 characters",
        "accounts[1].api_hash: expected a string, got an integer",
        "accounts[1].session_string: expected a string, got an integer",
    )


# --- one test per bad-config case -----------------------------------------------------------------


def test_problem_unknown_key() -> None:
    data = doc()
    data["accounts"][0]["apihash"] = API_HASH
    assert problems(data) == ("accounts[0].apihash: unknown key; did you mean api_hash?",)


def test_problem_unknown_keys_one_line_each_and_top_level() -> None:
    data = doc(extra=1, policy={"max_attempt": 3, "backof_s": [1]})
    assert problems(data) == (
        "extra: unknown key",
        "policy.backof_s: unknown key; did you mean backoff_s?",
        "policy.max_attempt: unknown key; did you mean max_attempts?",
    )


def test_problem_unknown_section_and_key_name_the_closest() -> None:
    data = doc(proxys=[], direct={"capacty": 2})
    assert problems(data) == (
        "proxys: unknown key; did you mean proxies?",
        "direct.capacty: unknown key; did you mean capacity?",
    )


def test_problem_wrong_type_port() -> None:
    with pytest.raises(
        ConfigError,
        match=r'^invalid config: proxies\[0\]\.port: expected an integer 1\.\.65535, got "80a"$',
    ):
        parse_config(doc(proxies=[proxy(port="80a")]), base_dir=Path("/x"))


@pytest.mark.parametrize(
    ("section", "key", "value", "line"),
    [
        ("telegram", "dc_id", "2", 'telegram.dc_id: expected an integer, got "2"'),
        (
            "telegram",
            "test_mode",
            "yes",
            'telegram.test_mode: expected a boolean (true or false), got "yes"',
        ),
        ("telegram", "dc_id", True, "telegram.dc_id: expected an integer, got true"),
        (
            "telegram",
            "connect_timeout_s",
            "20",
            'telegram.connect_timeout_s: expected a number, got "20"',
        ),
        ("telegram", "dc_host", 127001, "telegram.dc_host: expected a string, got 127001"),
        (
            "telegram",
            "rsa_keys",
            PEM,
            f"telegram.rsa_keys: expected an array, got {json.dumps(PEM)}",
        ),
        ("telegram", "rsa_keys", [PEM, 5], "telegram.rsa_keys[1]: expected a string, got 5"),
        ("policy", "max_attempts", 2.5, "policy.max_attempts: expected an integer, got 2.5"),
        ("policy", "backoff_s", [1, "2"], 'policy.backoff_s[1]: expected a number, got "2"'),
        (
            "daemon",
            "allowed_origins",
            {"a": 1},
            "daemon.allowed_origins: expected an array, got a table",
        ),
    ],
)
def test_problem_wrong_type(section: str, key: str, value: Any, line: str) -> None:
    assert problems(doc(**{section: {key: value}})) == (line,)


def test_problem_section_not_a_table() -> None:
    assert problems(doc(telegram=5, proxies={"name": "x"})) == (
        "telegram: expected a table, got 5",
        "proxies: expected an array of tables, got a table",
        'accounts[0].proxy: no proxy named "de-1"',
    )


def test_problem_missing_required() -> None:
    data = doc()
    del data["accounts"][1]["api_hash"]
    assert problems(data) == ("accounts[1].api_hash: missing",)


def test_problem_missing_required_proxy_fields() -> None:
    data = doc(proxies=[{"name": "de-1"}])
    assert problems(data) == (
        "proxies[0].type: missing",
        "proxies[0].host: missing",
        "proxies[0].port: missing",
    )


@pytest.mark.parametrize(
    ("data_proxy", "line"),
    [
        ({"capacity": 0}, "proxies[0].capacity: expected an integer >= 1, got 0"),
        ({"interval_s": -0.5}, "proxies[0].interval_s: expected a number >= 0, got -0.5"),
        ({"port": 0}, "proxies[0].port: expected an integer 1..65535, got 0"),
        ({"port": 65536}, "proxies[0].port: expected an integer 1..65535, got 65536"),
        ({"host": ""}, 'proxies[0].host: expected a non-empty string, got ""'),
    ],
)
def test_problem_out_of_range_proxy(data_proxy: dict[str, Any], line: str) -> None:
    assert problems(doc(proxies=[proxy(**data_proxy)])) == (line,)


@pytest.mark.parametrize(
    ("policy", "line"),
    [
        ({"call_deadline_s": 0}, "policy.call_deadline_s: expected a number > 0, got 0"),
        ({"job_deadline_s": -1.0}, "policy.job_deadline_s: expected a number > 0, got -1"),
        ({"max_attempts": 0}, "policy.max_attempts: expected an integer >= 1, got 0"),
        ({"backoff_s": []}, "policy.backoff_s: expected at least one delay, got an empty array"),
        ({"backoff_s": [1, -2]}, "policy.backoff_s[1]: expected a number >= 0, got -2"),
        ({"generic_cooldown_s": -1}, "policy.generic_cooldown_s: expected a number >= 0, got -1"),
        (
            {"proxy_cooldown_min_s": 60, "proxy_cooldown_max_s": 30},
            "policy.proxy_cooldown_max_s: expected a number >= proxy_cooldown_min_s (60), got 30",
        ),
    ],
)
def test_problem_out_of_range_policy(policy: dict[str, Any], line: str) -> None:
    assert problems(doc(policy=policy)) == (line,)


@pytest.mark.parametrize(
    ("telegram", "line"),
    [
        ({"dc_port": 0}, "telegram.dc_port: expected an integer 1..65535, got 0"),
        ({"dc_port": "x"}, 'telegram.dc_port: expected an integer 1..65535, got "x"'),
        ({"dc_id": 0}, "telegram.dc_id: expected an integer >= 1, got 0"),
        ({"connect_timeout_s": 0}, "telegram.connect_timeout_s: expected a number > 0, got 0"),
    ],
)
def test_problem_out_of_range_telegram(telegram: dict[str, Any], line: str) -> None:
    assert problems(doc(telegram=telegram)) == (line,)


@pytest.mark.parametrize(
    ("daemon", "line"),
    [
        (
            {"listen": "localhost"},
            'daemon.listen: expected "host:port" or "unix:/path", got "localhost"',
        ),
        ({"listen": "unix:"}, 'daemon.listen: expected "host:port" or "unix:/path", got "unix:"'),
        ({"max_frame_bytes": 0}, "daemon.max_frame_bytes: expected an integer >= 1, got 0"),
        ({"max_in_flight": -1}, "daemon.max_in_flight: expected an integer >= 1, got -1"),
        ({"shutdown_grace_s": -1}, "daemon.shutdown_grace_s: expected a number >= 0, got -1"),
    ],
)
def test_problem_out_of_range_daemon(daemon: dict[str, Any], line: str) -> None:
    assert problems(doc(daemon=daemon)) == (line,)


def test_daemon_listen_forms() -> None:
    for listen in ("127.0.0.1:8765", "[::1]:8765", "0.0.0.0:1", "unix:/run/mtpoold.sock"):
        assert (
            parse_config({"daemon": {"listen": listen}}, base_dir=Path("/x")).daemon.listen
            == listen
        )


def test_problem_proxy_type() -> None:
    assert problems(doc(proxies=[proxy(type="socks")])) == (
        'proxies[0].type: expected one of "socks5", "socks4", "http", "mtproxy", got "socks"',
    )


def test_problem_mtproxy_needs_secret() -> None:
    assert problems(doc(proxies=[proxy(type="mtproxy")])) == (
        'proxies[0].secret: missing (required when type = "mtproxy")',
    )
    assert problems(doc(proxies=[proxy(type="mtproxy", secret="")])) == (
        'proxies[0].secret: missing (required when type = "mtproxy")',
    )


def test_a_trailing_newline_is_not_part_of_a_valid_value() -> None:
    # case 004's kind: a regex "$" matches before a final "\n", so "…\n" passed check-config
    # and went to Telethon as it was (an api_hash of 33 characters)
    data = doc()
    data["accounts"][0]["api_hash"] = API_HASH + "\n"
    data["accounts"][0]["id"] = "acc-0\n"
    assert problems(data) == (
        "accounts[0].id: expected letters, digits and _ . @ : - (not starting with a symbol),"
        ' got "acc-0\\n"',
        "accounts[0].api_hash: expected 32 hexadecimal characters, got a string of 33 characters",
    )


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        # case 002's kind at the config door: job_deadline_s = inf passed check-config and
        # reload, then every job without a deadline failed INVALID_ARGUMENT ("deadline must
        # be a finite number"), blamed on its caller
        ("policy", "job_deadline_s", math.inf, "a finite number > 0"),
        ("policy", "call_deadline_s", math.inf, "a finite number > 0"),
        ("policy", "stream_closed_cooldown_s", math.inf, "a finite number >= 0"),
        ("policy", "stream_closed_cooldown_s", math.nan, "a finite number >= 0"),
        ("telegram", "connect_timeout_s", math.inf, "a finite number > 0"),
        ("daemon", "shutdown_grace_s", math.inf, "a finite number >= 0"),
        ("economy", "knower_wait_s", math.nan, "a finite number >= 0"),
        ("direct", "interval_s", math.inf, "a finite number >= 0"),
    ],
)
def test_problem_numbers_are_finite(section: str, key: str, value: float, expected: str) -> None:
    data = doc(**{section: {key: value}})
    assert problems(data) == (f"{section}.{key}: expected {expected}, got {value}",)


def test_problem_backoff_and_proxy_interval_are_finite() -> None:
    data = doc(policy={"backoff_s": [1, math.inf]}, proxies=[proxy(interval_s=math.nan)])
    assert problems(data) == (
        "policy.backoff_s[1]: expected a finite number >= 0, got inf",
        "proxies[0].interval_s: expected a finite number >= 0, got nan",
    )


HOST_RULE = "expected a host name or an IP address"


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "::1", "proxy-1.example.com", "localhost", "my_proxy", "bücher.example"]
)
def test_proxy_host_accepted(host: str) -> None:
    config = parse_config(doc(proxies=[proxy(host=host)]), base_dir=Path("/x"))
    assert config.proxies[0].host == host


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        # case 004's kind: what check-config accepted and the proxy client then misread
        ("socks5://10.0.0.1", f'{HOST_RULE}, got "socks5://10.0.0.1" (the host alone: no scheme)'),
        ("10.0.0.1:1080", f'{HOST_RULE}, got "10.0.0.1:1080" (the port goes in port)'),
        ("[::1]", f'{HOST_RULE}, got "[::1]" (an IPv6 address without brackets)'),
        (" 10.0.0.1", f'{HOST_RULE}, got " 10.0.0.1"'),
        ("10.0.0.1\n", f'{HOST_RULE}, got "10.0.0.1\\n"'),
        ("exa mple.com", f'{HOST_RULE}, got "exa mple.com"'),
        ("-bad.example", f'{HOST_RULE}, got "-bad.example"'),
        ("999.1.1.1", f'{HOST_RULE}, got "999.1.1.1"'),
        ("a..b", f'{HOST_RULE}, got "a..b"'),
    ],
)
def test_problem_proxy_host(host: str, reason: str) -> None:
    assert problems(doc(proxies=[proxy(host=host)])) == (f"proxies[0].host: {reason}",)


# Shared case 004-mtproxy-secret-validation: what check-config accepted and Telethon misread.
HEX32 = "0123456789abcdef0123456789abcdef"
MTPROXY_RULE = 'expected 32 hexadecimal characters, optionally prefixed "dd" (any case)'


@pytest.mark.parametrize(
    ("secret", "stored"),
    [
        ("DD" + HEX32.upper(), "dd" + HEX32),  # case 004 row 1: Telethon's "dd" test is
        ("dD" + HEX32, "dd" + HEX32),  # case-sensitive, so the config stores lower case
        ("dd" + HEX32, "dd" + HEX32),
        (HEX32.upper(), HEX32),
        (HEX32, HEX32),
        ("dd" + HEX32[2:] + "dd", "dd" + HEX32[2:] + "dd"),  # a plain secret may begin with dd
    ],
)
def test_mtproxy_secret_accepted_and_normalised(secret: str, stored: str) -> None:
    config = parse_config(
        doc(proxies=[proxy(type="mtproxy", port=443, secret=secret)]), base_dir=Path("/x")
    )
    assert config.proxies[0].secret == stored


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("abcd", f"{MTPROXY_RULE}, got a string of 4 characters"),  # case 004 row 2
        (  # case 004 row 3
            "0x" + HEX32,
            f'{MTPROXY_RULE}, got a string of 34 characters starting with "0x" (write the hex'
            " digits alone)",
        ),
        ("ASNFZ4mrze8BI0VniavN7w==", f"{MTPROXY_RULE}, got a string of 24 characters"),  # base64
        (HEX32[:-1], f"{MTPROXY_RULE}, got a string of 31 characters"),
        (HEX32 + "0", f"{MTPROXY_RULE}, got a string of 33 characters"),
        ("dd" + HEX32 + "00", f"{MTPROXY_RULE}, got a string of 36 characters"),
        (HEX32[:-1] + "g", f"{MTPROXY_RULE}, got a string of 32 characters"),
        (" " + HEX32, f"{MTPROXY_RULE}, got a string of 33 characters"),
        (HEX32 + "\n", f"{MTPROXY_RULE}, got a string of 33 characters"),  # regex "$" let it by
        ("dd" + HEX32 + "\n", f"{MTPROXY_RULE}, got a string of 35 characters"),
        (
            "ee" + HEX32,
            f"fake-TLS (ee…) MTProxy secrets are not supported: {MTPROXY_RULE},"
            " got a string of 34 characters",
        ),
        (
            "EE" + HEX32 + "676f6f676c652e636f6d",  # + hex("google.com"): fake-TLS with domain
            f"fake-TLS (ee…) MTProxy secrets are not supported: {MTPROXY_RULE},"
            " got a string of 54 characters",
        ),
    ],
)
def test_problem_mtproxy_secret_format(secret: str, reason: str) -> None:
    found = problems(doc(proxies=[proxy(), proxy(name="mt", type="mtproxy", secret=secret)]))
    assert found == (f"proxies[1].secret: {reason}",)
    assert secret.strip() not in found[0]  # the value itself is never shown


def test_secret_of_other_proxy_types_is_not_checked() -> None:
    config = parse_config(doc(proxies=[proxy(secret="Ab")]), base_dir=Path("/x"))
    assert config.proxies[0].secret == "ab"


def test_problem_dangling_proxy_reference() -> None:
    data = doc()
    data["accounts"].append(account(2, proxy="nl-2"))
    assert problems(data) == ('accounts[2].proxy: no proxy named "nl-2"',)


def test_problem_duplicate_account_ids() -> None:
    data = doc()
    data["accounts"].append(account(2, id="acc-0"))
    assert problems(data) == ('accounts[2].id: duplicate account id "acc-0" (also accounts[0])',)


def test_problem_duplicate_proxy_names() -> None:
    data = doc(proxies=[proxy(), proxy(host="10.0.0.2")])
    assert problems(data) == ('proxies[1].name: duplicate proxy name "de-1" (also proxies[0])',)


def test_problem_duplicate_session_paths_compared_resolved(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    data = doc()
    data["accounts"][1]["session"] = str(tmp_path / "sub" / ".." / "sessions" / "acc-0.session")
    data["accounts"].append(account(2, session="sessions/acc-0"))  # Telethon adds ".session"
    data["accounts"].append(account(3, session="sessions/other.session"))
    expected = tmp_path / "sessions" / "acc-0.session"
    assert problems(data, base_dir=tmp_path) == (
        f"accounts[1].session: same session file as accounts[0] ({expected})",
        f"accounts[2].session: same session file as accounts[0] ({expected})",
    )


@pytest.mark.parametrize(
    ("sources", "got"),
    [
        ({}, "none"),
        ({"session": "a.session", "session_string": "1abc"}, "session, session_string"),
        (
            {"session_string_env": "S", "session_credential": "c", "session": "x"},
            "session, session_string_env, session_credential",
        ),
    ],
)
def test_problem_session_source_not_exactly_one(sources: dict[str, str], got: str) -> None:
    data = doc()
    data["accounts"][1] = {**account(1, session=None), **sources}
    assert problems(data) == (
        "accounts[1]: expected exactly one of session, session_string, session_string_env,"
        f" session_credential, got {got}",
    )


def test_each_session_source_alone_is_fine() -> None:
    for source in (
        {"session": "a"},
        {"session_string": "1BVts"},
        {"session_string_env": "MTPOOLD_S"},
        {"session_credential": "acc.cred"},
    ):
        data = doc()
        data["accounts"][1] = {**account(1, session=None), **source}
        parse_config(data, base_dir=Path("/x"))


def test_problem_session_source_values() -> None:
    data = doc()
    data["accounts"].append(account(2, session=None, session_string_env="1-BAD"))
    data["accounts"].append(account(3, session=None, session_credential="../etc/x"))
    assert problems(data) == (
        'accounts[2].session_string_env: expected an environment variable name, got "1-BAD"',
        "accounts[3].session_credential: expected a file name inside $CREDENTIALS_DIRECTORY,"
        ' got "../etc/x"',
    )


def test_problem_rsa_key_file_unreadable(tmp_path: Path) -> None:
    (tmp_path / "notpem.txt").write_text("hello")
    data = doc(telegram={"rsa_keys": [PEM, "missing.pem", "notpem.txt"]})
    data["accounts"][0]["telegram"] = {"rsa_keys": ["nope.pem"]}
    assert problems(data, base_dir=tmp_path) == (
        f"telegram.rsa_keys[1]: cannot read PEM file {tmp_path / 'missing.pem'}"
        " (No such file or directory)",
        f"telegram.rsa_keys[2]: {tmp_path / 'notpem.txt'} is not a PEM file (no -----BEGIN line)",
        f"accounts[0].telegram.rsa_keys[0]: cannot read PEM file {tmp_path / 'nope.pem'}"
        " (No such file or directory)",
    )


def test_problem_account_telegram_override() -> None:
    data = doc()
    data["accounts"][0]["telegram"] = {"dc_port": 0, "dc_idd": 2, "test_mode": 1}
    assert problems(data) == (
        "accounts[0].telegram.dc_idd: unknown key; did you mean dc_id?",
        "accounts[0].telegram.test_mode: expected a boolean (true or false), got 1",
        "accounts[0].telegram.dc_port: expected an integer 1..65535, got 0",
    )


def test_problem_bad_account_id() -> None:
    data = doc()
    data["accounts"][1]["id"] = "has space"
    assert problems(data) == (
        "accounts[1].id: expected letters, digits and _ . @ : - (not starting with a symbol),"
        ' got "has space"',
    )


# --- all at once ----------------------------------------------------------------------------------


def test_many_problems_reported_at_once(tmp_path: Path) -> None:
    data = {
        "daemon": {"listen": "nowhere", "bogus": 1},
        "policy": {"max_attempts": 0},
        "proxies": [
            proxy(port="80a", capacity=0, type="socks"),
            proxy(type="mtproxy", port=70000),
        ],
        "accounts": [
            account(0, apihash="x", api_hash="short"),
            account(1, api_id="12", session="sessions/acc-0", proxy="nl-2", api_hash=None),
            account(2, session=None),
            account(0),
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=tmp_path)
    same = tmp_path / "sessions" / "acc-0.session"
    expected = (
        "daemon.bogus: unknown key",
        'daemon.listen: expected "host:port" or "unix:/path", got "nowhere"',
        "policy.max_attempts: expected an integer >= 1, got 0",
        'proxies[0].type: expected one of "socks5", "socks4", "http", "mtproxy", got "socks"',
        'proxies[0].port: expected an integer 1..65535, got "80a"',
        "proxies[0].capacity: expected an integer >= 1, got 0",
        "proxies[1].port: expected an integer 1..65535, got 70000",
        'proxies[1].secret: missing (required when type = "mtproxy")',
        'proxies[1].name: duplicate proxy name "de-1" (also proxies[0])',
        "accounts[0].apihash: unknown key; did you mean api_hash?",
        "accounts[0].api_hash: expected 32 hexadecimal characters, got a string of 5 characters",
        'accounts[1].api_id: expected an integer, got "12"',
        "accounts[1].api_hash: missing",
        f"accounts[1].session: same session file as accounts[0] ({same})",
        'accounts[1].proxy: no proxy named "nl-2"',
        "accounts[2]: expected exactly one of session, session_string, session_string_env,"
        " session_credential, got none",
        'accounts[3].id: duplicate account id "acc-0" (also accounts[0])',
        f"accounts[3].session: same session file as accounts[0] ({same})",
    )
    assert info.value.problems == expected
    assert str(info.value) == f"invalid config, {len(expected)} problems:\n" + "\n".join(
        f"  {line}" for line in expected
    )


# --- load_config errors ---------------------------------------------------------------------------


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(
        ConfigError,
        match=rf"^invalid config: {re.escape(str(path))}: cannot read"
        r" \(No such file or directory\)$",
    ):
        load_config(path)


def test_load_config_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[daemon\n")
    with pytest.raises(
        ConfigError, match=rf"^invalid config: {re.escape(str(path))}: invalid TOML \(.+\)$"
    ):
        load_config(path)


def test_load_config_relative_to_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "mtpoold.toml"
    path.write_text(
        f'[[accounts]]\nid = "a"\napi_id = 1\napi_hash = "{API_HASH}"\nsession = "s/a.session"\n'
    )
    config = load_config(path)
    assert config.accounts[0].session == str(tmp_path / "conf" / "s" / "a.session")


# --- invariants and the converter -----------------------------------------------------------------


def test_validators_are_invariants() -> None:
    with pytest.raises(ValueError, match=r"^capacity: expected an integer >= 1, got 0$"):
        ProxyConfig(name="p", type="socks5", host="h", port=1, capacity=0)
    with pytest.raises(
        ConfigError, match=r'^invalid config: accounts\[0\]\.proxy: no proxy named "x"$'
    ):
        Config(
            accounts=(AccountConfig(id="a", api_id=1, api_hash=API_HASH, session="s", proxy="x"),)
        )


def test_converter_error_keeps_validator_message() -> None:
    # Structuring with validators ON: cattrs wraps the validator's exception; cattrs'
    # stock transform_error formatter would say "unknown error"/"invalid value". Ours keeps it.
    from mtpoold._config import _problems_from

    with pytest.raises(cattrs.BaseValidationError) as info:
        converter.structure({"proxies": [proxy(capacity=0)]}, Config)
    assert list(_problems_from(info.value, "")) == [
        "proxies[0].capacity: expected an integer >= 1, got 0"
    ]
    stock = cattrs.transform_error(info.value)
    assert not any("expected an integer >= 1" in line for line in stock)


def test_converter_round_trip() -> None:
    config = load_config(EXAMPLE)
    data = converter.unstructure(config)
    assert converter.structure(copy.deepcopy(data), Config) == config


# --- proxy_key ------------------------------------------------------------------------------------


def test_proxy_key_is_the_name_without_any_secret() -> None:
    p = ProxyConfig(
        name="x", type="socks5", host="10.0.0.1", port=1080, username="u", password="pw"
    )
    assert proxy_key(p) == "x"
    # the PHP system's unsalted SHA-1 (password guessable offline) is nowhere in it
    canonical = '{"host":"10.0.0.1","password":"pw","port":1080,"type":"socks5","username":"u"}'
    assert hashlib.sha1(canonical.encode()).hexdigest()[:16] not in proxy_key(p)


def test_proxy_key_survives_password_and_tuning_changes_and_handles_none() -> None:
    p = ProxyConfig(name="x", type="http", host="h", port=3128)
    q = attrs.evolve(p, capacity=5, interval_s=0.5, rdns=False, password="other")
    assert proxy_key(p) == proxy_key(q) == "x"
    assert proxy_key(None) == "no_proxy"
    assert proxy_key(attrs.evolve(p, name="no_proxy")) != proxy_key(None)  # never the direct lane


def test_check_config_example_needs_exactly_its_documented_session_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtpoold._authorize import write_session_file
    from mtpoold._cli import main
    from mtpoold.testing import DC

    monkeypatch.delenv("MTPOOLD_SESSION_ACC_NL_1", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    # on a fresh machine: every missing source, named as the example's header says
    assert main(["check-config", str(EXAMPLE)]) == 2
    err = capsys.readouterr().err
    sessions = EXAMPLE.parent / "sessions"
    assert f"accounts[0].session: no session file at {sessions}/acc-de-1a.session" in err
    assert "mtpoold authorize acc-de-1a" in err
    assert "$CREDENTIALS_DIRECTORY" in err and "acc-de-1b" in err
    assert "MTPOOLD_SESSION_ACC_NL_1 (session_string_env) is not set" in err
    assert f"accounts[3].session: no session file at {sessions}/acc-direct.session" in err
    assert len(err.strip().splitlines()) == 4, err
    # with them in place (a copy of the example, so nothing is written next to it): ok
    copy = tmp_path / "mtpoold.toml"
    copy.write_text(EXAMPLE.read_text())
    for n, name in enumerate(("acc-de-1a", "acc-direct")):
        session = DC(port=1).session_string(f"1555000000{n + 3}")
        write_session_file(tmp_path / "sessions" / name, session, {})  # real Telethon sessions
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "acc-de-1b.session-string").write_text(DC(port=1).session_string("15550000001"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("MTPOOLD_SESSION_ACC_NL_1", DC(port=1).session_string("15550000002"))
    assert main(["check-config", str(copy)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{copy}: ok: 4 accounts, 3 proxies")


@pytest.mark.parametrize(
    ("source", "value", "what"),
    [
        ("session_string", "1BQANOTREALBUTLONGENOUGH", "the same session string"),
        ("session_string_env", "MY_SESSION", "the same environment variable MY_SESSION"),
        ("session_credential", "acc.session", 'the same credential "acc.session"'),
    ],
)
def test_parse_config_one_session_source_on_two_accounts(
    source: str, value: str, what: str
) -> None:
    data = doc()
    data["accounts"][0] = {**account(0, session=None), source: value}
    data["accounts"][1] = {**account(1, session=None), source: value}
    found = problems(data)
    assert list(found) == [
        f"accounts[1].{source}: {what} as accounts[0].{source}"
        " (one auth key must never be used by two accounts)"
    ]
    assert all("1BQANOTREAL" not in p for p in found)  # a session string is never echoed


def test_PolicyConfig_allow_methods() -> None:
    config = parse_config(
        {"policy": {"allow_methods": ["auth.LogOut", "account.deleteAccount"]}}, base_dir=Path("/x")
    )
    assert config.policy.allow_methods == ("auth.LogOut", "account.deleteAccount")
    assert PolicyConfig().allow_methods == ()
    for value, problem in [
        (["auth.Bogus"], 'policy.allow_methods[0]: unknown TL function "auth.Bogus"'),
        (
            ["auth.LogOut", "messages.GetHistory"],
            "policy.allow_methods[1]: messages.GetHistory is not blocked; allow_methods only"
            " unblocks functions of the built-in block list",
        ),
        ("auth.LogOut", 'policy.allow_methods: expected an array, got "auth.LogOut"'),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config({"policy": {"allow_methods": value}}, base_dir=Path("/x"))
        assert info.value.problems == (problem,)


# --- the quick path of plain entries (mtpoold._config._quick_entry) ------------------------------


class _StrSub(str):
    pass


QUICK_CASES: list[tuple[str, dict[str, Any]]] = [
    ("plain", doc()),
    (
        "every account field",
        doc(
            accounts=[
                account(
                    0,
                    proxy="de-1",
                    device_model="x",
                    system_version="1",
                    app_version="2",
                    lang_code="en",
                    system_lang_code="en-US",
                    tags=["eu", "a"],
                )
            ]
        ),
    ),  # fmt: skip
    ("tags as a tuple", doc(accounts=[account(0, tags=("eu",))])),
    ("a session string", doc(accounts=[account(0, session=None, session_string="s1")])),
    ("a session of spaces", doc(accounts=[account(0, session="  ")])),
    ("an empty session", doc(accounts=[account(0, session="")])),
    ("two session sources", doc(accounts=[account(0, session_string_env="S")])),
    ("no session source", doc(accounts=[account(0, session=None)])),
    ("a missing key", doc(accounts=[{"id": "a", "api_hash": API_HASH, "session": "s"}])),
    ("an unknown key", doc(accounts=[account(0, apihash=API_HASH)])),
    ("a telegram override", doc(accounts=[account(0, telegram={"dc_id": 4})])),
    ("a bad telegram override", doc(accounts=[account(0, telegram={"dc_id": 0})])),
    ("a bool for an int", doc(accounts=[account(0, api_id=True)])),
    ("a float for an int", doc(accounts=[account(0, api_id=1.0)])),
    ("an int for a float", doc(proxies=[proxy(interval_s=3)])),
    ("a bool for a float", doc(proxies=[proxy(interval_s=False)])),
    ("a string subclass", doc(accounts=[account(0, id=_StrSub("sub"))])),
    ("a non-string tag", doc(accounts=[account(0, tags=["eu", 3])])),
    ("tags not an array", doc(accounts=[account(0, tags="eu")])),
    ("a bad id", doc(accounts=[account(0, id="-x")])),
    ("a bad api_hash", doc(accounts=[account(0, api_hash="0x12")])),
    ("an entry not a table", doc(accounts=["acc-0"])),
    ("duplicate ids", doc(accounts=[account(0), account(0, session="other")])),
    ("an unknown proxy", doc(accounts=[account(0, proxy="nl-1")])),
    ("an MTProxy", doc(proxies=[proxy(type="mtproxy", secret="DD" + "AB" * 16)])),
    ("an MTProxy without a secret", doc(proxies=[proxy(type="mtproxy")])),
    ("a bad proxy type", doc(proxies=[proxy(type="socks6")])),
    ("a bad host", doc(proxies=[proxy(host="http://x")])),
    ("a port out of range", doc(proxies=[proxy(port=0)])),
    (
        "every proxy field",
        doc(proxies=[proxy(username="u", password="p", rdns=False, capacity=3, interval_s=0.5)]),
    ),  # fmt: skip
]


def _parse_or_problems(data: dict[str, Any]) -> Config | tuple[str, ...]:
    try:
        return parse_config(copy.deepcopy(data), base_dir=Path("/etc/mtpoold"))
    except ConfigError as exc:
        return exc.problems


@pytest.mark.parametrize("data", [d for _, d in QUICK_CASES], ids=[n for n, _ in QUICK_CASES])
def test_quick_entries_parse_as_the_full_path_does(
    data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry built by the quick path equals the full path's (cattrs, then every
    validator), field for field; an entry the quick path refuses gets the full path's
    problems, the same lines in the same order."""
    quick = _parse_or_problems(data)
    monkeypatch.setattr("mtpoold._config._quick_entry", lambda *_a: None)
    full = _parse_or_problems(data)
    assert quick == full
    if isinstance(quick, Config):
        assert isinstance(full, Config)
        for mine, theirs in zip(quick.accounts + quick.proxies, full.accounts + full.proxies,
                                strict=True):  # fmt: skip
            assert attrs.asdict(mine) == attrs.asdict(theirs)
            assert type(mine) is type(theirs)


def test_plain_entries_take_the_quick_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def full_path(*_a: Any) -> Any:
        raise AssertionError("a plain entry took the full path")

    monkeypatch.setattr("mtpoold._config._structure_entry", full_path)
    config = parse_config(doc(), base_dir=Path("/etc/mtpoold"))
    assert config.accounts[0].session == "/etc/mtpoold/sessions/acc-0.session"
    assert config.proxies[0].interval_s == 2.0


def test_quick_path_off_while_validators_are_disabled() -> None:
    """With attrs validators turned off by the caller, the quick path would check nothing:
    entries go the full way, which still finds every problem."""
    with attrs.validators.disabled():
        assert "accounts[0].id" in problems(doc(accounts=[account(0, id="-x")]))[0]


PATH_CASES = ["a", "a/b", "../a", "a/../b", "/abs/x", "//x", "./a", "a/./b", "a/.", ".", "a/",
              "~", "~/x", "a//b", "a/.b", ".a", "...", " ", "/", "..", "a/..", "é/ü"]  # fmt: skip


@pytest.mark.parametrize("base", [Path("/etc/mtpoold"), Path("/"), Path("rel/dir")])
def test_session_paths_join_as_pathlib_does(base: Path) -> None:
    from mtpoold._config import _under

    for path in PATH_CASES:
        assert _under(base, path) == str(base / Path(path).expanduser()), path


def test_session_file_keys_with_remembered_directories_equal_full_resolution(
    tmp_path: Path,
) -> None:
    """`_session_file_key` with a directory cache (what `_cross_problems` uses) gives what
    resolving each path in full gives: links in a directory or as the file followed,
    ``.`` and ``..`` components, absolute paths, files that do not exist."""
    from mtpoold._config import _session_file_key

    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "linked").symlink_to(real)
    (real / "target.session").write_text("")
    (real / "alias.session").symlink_to(real / "target.session")
    (real / "dangling.session").symlink_to(tmp_path / "nowhere.session")
    names = ["a", "a.session", "sub/a", "sub/../a", "./a", "linked/a", "linked/sub/a",
             "linked/alias", "real/alias.session", "real/dangling", "linked/..", "x/../linked/a",
             str(tmp_path / "linked" / "target"), "linked//sub//a", ".", ".."]  # fmt: skip
    remembered: dict[str, str] = {}
    for base in (tmp_path, tmp_path / "linked", real / "sub"):
        for name in names:
            expected = _session_file_key(name, base)
            assert _session_file_key(name, base, remembered) == expected, (base, name)
    key = _session_file_key
    assert key("linked/alias", tmp_path, {}) == key("real/target", tmp_path, {})
