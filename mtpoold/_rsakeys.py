"""Extra Telegram server RSA keys, registered with Telethon once per key per process.

Telethon keeps its server keys in one process-wide table (``telethon.crypto.rsa``); the
``[telegram] rsa_keys`` of every config generation (and ``mtpoold authorize``) are added to it
here, each key once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rsa
from telethon.crypto import rsa as tl_rsa

from ._errors import ConfigError

__all__ = ["register_rsa_keys"]

_registered_rsa_keys: set[tuple[int, int]] = set()  # (n, e) added to Telethon in this process


def _load_rsa_key(spec: str) -> rsa.PublicKey:
    text = spec if "-----BEGIN" in spec else Path(spec).read_text(encoding="ascii")
    data = text.encode("ascii")
    if b"BEGIN RSA PUBLIC KEY" in data:
        return rsa.PublicKey.load_pkcs1(data)
    return rsa.PublicKey.load_pkcs1_openssl_pem(data)


def register_rsa_keys(keys: Sequence[str], *, where: str = "telegram.rsa_keys") -> int:
    """Register extra Telegram server RSA keys with Telethon, each once per process.

    Args:
        keys: PEM texts (``BEGIN RSA PUBLIC KEY`` or ``BEGIN PUBLIC KEY``) or paths of PEM files.
        where: Config key path for error messages.

    Returns:
        How many keys were newly registered.

    Raises:
        ConfigError: listing every key that cannot be read or parsed.
    """
    problems: list[str] = []
    added = 0
    for i, spec in enumerate(keys):
        try:
            key = _load_rsa_key(spec)
        except (OSError, ValueError, UnicodeError) as exc:
            label = spec if "-----BEGIN" not in spec else "PEM text"
            problems.append(f"{where}[{i}]: cannot load RSA key from {label}: {type(exc).__name__}")
            continue
        ident = (key.n, key.e)
        if ident in _registered_rsa_keys:
            continue
        tl_rsa.add_key(key.save_pkcs1().decode("ascii"), old=False)
        _registered_rsa_keys.add(ident)
        added += 1
    if problems:
        raise ConfigError(problems)
    return added
