"""Case 004's kind (a value check-config accepts and the client then misuses) for
``[[accounts]] api_id``: TL's ``initConnection`` takes ``api_id:int`` (int32), but the config
takes any integer >= 1. With ``api_id = 2147483648`` check-config says ok, and at run time
Telethon's ``InitConnectionRequest`` fails to serialize (``struct.error: 'i' format requires
-2147483648 <= number <= 2147483647``, only in the log), which the client reads as the
connection breaking before the DC answered: every job fails PROXY_UNAVAILABLE blaming the
proxy / direct lane ("the DC's address (direct, no proxy) broke the connection (error) after
0 bytes sent"), cooling it. Pre-existing (not the quick path: both paths accept it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mtpoold._config import parse_config
from mtpoold._errors import ConfigError

API_HASH = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("api_id", [2**31, 2**63, 10**30])
def test_api_id_beyond_int32_is_a_config_problem(api_id: int) -> None:
    account = {"id": "a", "api_id": api_id, "api_hash": API_HASH, "session_string": "s"}
    with pytest.raises(ConfigError) as info:
        parse_config({"accounts": [account]}, base_dir=Path("/etc/mtpoold"))
    assert any(line.startswith("accounts[0].api_id: ") for line in info.value.problems)


def test_api_id_int32_max_is_fine() -> None:
    account = {"id": "a", "api_id": 2**31 - 1, "api_hash": API_HASH, "session_string": "s"}
    parse_config({"accounts": [account]}, base_dir=Path("/etc/mtpoold"))
