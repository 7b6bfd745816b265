"""Extra server RSA keys registered with Telethon once per key (`mtpoold._rsakeys`)."""

from __future__ import annotations

from typing import Any

import rsa
from telethon.crypto import rsa as tl_rsa

from mtpoold._rsakeys import register_rsa_keys


def test_register_rsa_keys_once_per_key(tmp_path: Any) -> None:
    pub, _ = rsa.newkeys(512)
    pkcs1 = pub.save_pkcs1().decode()
    path = tmp_path / "key.pem"
    path.write_bytes(pub.save_pkcs1())
    before = dict(tl_rsa._server_keys)
    try:
        assert register_rsa_keys([pkcs1]) == 1
        assert register_rsa_keys([pkcs1, str(path)]) == 0
        assert len(tl_rsa._server_keys) == len(before) + 1
    finally:
        tl_rsa._server_keys.clear()
        tl_rsa._server_keys.update(before)
