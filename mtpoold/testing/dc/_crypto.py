"""Cryptographic primitives of the loopback DC: RSA key, DH group, AES-IGE, key derivation.

Everything that must survive a restart (the RSA key, the pre-authorized auth keys, server salts)
is derived deterministically from the DC seed, so a DC restarted with the same seed accepts the
clients of the previous run. AES-IGE goes through ``telethon.crypto.AES`` (cryptg-backed).
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from typing import Final

import attrs
import rsa
from telethon.crypto import AES
from telethon.tl import TLObject

# The 2048-bit safe prime Telegram itself uses (and Telethon's ``password.py`` knows as "good"),
# with generator 3. Used for both the auth key exchange and the 2FA SRP group.
DH_PRIME: Final = int(
    "C71CAEB9C6B1C9048E6C522F70F13F73980D40238E3E21C14934D037563D930F"
    "48198A0AA7C1405822949 3D22530F4DBFA336F6E0AC925139543AED44CCE7C37"
    "20FD51F69458705AC68CD4FE6B6B13ABDC9746512969328454F18FAF8C595F64"
    "2477FE96BB2A941D5BCD1D4AC8CC49880708FA9B378E3C4F3A9060BEE67CF9A4"
    "A4A695811051907E162753B56B0F6B410DBA74D8A84B2A14B3144E0EF1284754"
    "FD17ED950D5965B4B9DD46582DB1178D169C6BC465B0D6FF9CA3928FEF5B9AE4"
    "E418FC15E83EBEA0F87FA9FF5EED70050DED2849F47BF959D956850CE929851F"
    "0D8115F635B105EE2E4E15D04B2454BF6F4FADF034B10403119CD8E3B92FCC5B".replace(" ", ""),
    16,
)
DH_G: Final = 3
DH_PRIME_BYTES: Final = DH_PRIME.to_bytes(256, "big")

RSA_BITS: Final = 2048
RSA_E: Final = 65537
AUTH_KEY_BYTES: Final = 256


def seed_bytes(seed: str | bytes | int) -> bytes:
    """Normalise a DC seed to bytes (str as UTF-8, int as its decimal text)."""
    if isinstance(seed, bytes):
        return seed
    return str(seed).encode()


def _drbg(seed: bytes, label: bytes) -> bytes:
    """A stream-less deterministic bit generator: call repeatedly with a counter in ``label``."""
    return hashlib.sha512(b"mtpoold-dc\x00" + label + b"\x00" + seed).digest()


def _is_probable_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    # Fixed bases: deterministic result, and more than enough for keys of a test server.
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


_SMALL_PRIMES: Final = tuple(
    p for p in range(3, 2000, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2))
)


def _deterministic_prime(seed: bytes, label: bytes, bits: int) -> int:
    counter = 0
    while True:
        raw = b"".join(
            _drbg(seed, label + struct.pack(">II", counter, i)) for i in range((bits + 511) // 512)
        )
        counter += 1
        n = int.from_bytes(raw, "big") >> (len(raw) * 8 - bits)
        n |= (3 << (bits - 2)) | 1  # top two bits set: the product has exactly 2*bits bits
        if (n - 1) % RSA_E != 0 and _is_probable_prime(n):
            return n


@functools.lru_cache(maxsize=16)
def rsa_private_key_from_seed(seed: bytes) -> rsa.PrivateKey:
    """Derive a 2048-bit RSA key from ``seed``, the same key for the same seed.

    Takes a fraction of a second of pure-Python prime search; cached per process.
    """
    p = _deterministic_prime(seed, b"rsa-p", RSA_BITS // 2)
    q = _deterministic_prime(seed, b"rsa-q", RSA_BITS // 2)
    if p == q:  # pragma: no cover - astronomically unlikely
        raise ValueError("degenerate RSA key")
    n = p * q
    d = pow(RSA_E, -1, (p - 1) * (q - 1))
    return rsa.PrivateKey(n, RSA_E, d, p, q)


def rsa_fingerprint(n: int, e: int) -> int:
    """Telegram's RSA key fingerprint: the low 64 bits of sha1(n, e as TL bytes), signed."""
    data = TLObject.serialize_bytes(_int_bytes(n)) + TLObject.serialize_bytes(_int_bytes(e))
    return int(struct.unpack("<q", hashlib.sha1(data).digest()[-8:])[0])


def _int_bytes(value: int) -> bytes:
    """Big-endian bytes of minimal length, as Telethon's ``rsa.get_byte_array``."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def int_bytes(value: int) -> bytes:
    """Big-endian bytes of minimal length (what MTProto calls a big-endian ``bytes`` number)."""
    return _int_bytes(value)


@attrs.frozen
class ServerRsaKey:
    """The DC's RSA key pair.

    Attributes:
        private: the ``rsa`` package's private key.
        fingerprint: signed 64-bit fingerprint the client looks up.
        public_pem: PKCS#1 PEM of the public key, what ``telethon.crypto.rsa.add_key`` takes.
    """

    private: rsa.PrivateKey
    fingerprint: int
    public_pem: str

    @classmethod
    def from_private(cls, key: rsa.PrivateKey) -> ServerRsaKey:
        """Wrap an ``rsa.PrivateKey``."""
        pem = rsa.PublicKey(key.n, key.e).save_pkcs1().decode()
        return cls(key, rsa_fingerprint(key.n, key.e), pem)

    @classmethod
    def from_seed(cls, seed: bytes) -> ServerRsaKey:
        """Derive the key from a seed (deterministic)."""
        return cls.from_private(rsa_private_key_from_seed(seed))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> ServerRsaKey:
        """Load a PKCS#1 ``RSA PRIVATE KEY`` PEM."""
        data = pem.encode() if isinstance(pem, str) else pem
        return cls.from_private(rsa.PrivateKey.load_pkcs1(data))

    def decrypt_raw(self, block: bytes) -> bytes:
        """Textbook RSA decryption of a 256-byte block to 255 bytes (Telethon's scheme).

        Raises:
            ValueError: if the block is not a number below the modulus.
        """
        c = int.from_bytes(block, "big")
        if not 0 < c < self.private.n:
            raise ValueError("RSA block out of range")
        m = pow(c, self.private.d, self.private.n)
        if m.bit_length() > 255 * 8:
            raise ValueError("RSA plaintext too long")
        return m.to_bytes(255, "big")


def derive_auth_key(seed: bytes, phone: str) -> bytes:
    """The pre-authorized 2048-bit auth key of the user with ``phone`` (a sha256 chain)."""
    head = hashlib.sha256(b"mtpoold-dc-authkey\x00" + seed + b"\x00" + phone.encode()).digest()
    out = bytearray()
    block = head
    while len(out) < AUTH_KEY_BYTES:
        block = hashlib.sha256(block + head).digest()
        out += block
    return bytes(out[:AUTH_KEY_BYTES])


def derive_int64(seed: bytes, label: bytes) -> int:
    """A signed 64-bit number derived from ``seed`` and ``label`` (salts, hashes)."""
    return int(struct.unpack("<q", hashlib.sha256(label + b"\x00" + seed).digest()[:8])[0])


def derive_bytes(seed: bytes, label: bytes, n: int = 32) -> bytes:
    """``n`` (<= 64) bytes derived from ``seed`` and ``label``."""
    return _drbg(seed, label)[:n]


def auth_key_id(key: bytes) -> int:
    """The auth_key_id (low 64 bits of sha1, unsigned) Telethon puts in front of each packet."""
    return int(struct.unpack("<Q", hashlib.sha1(key).digest()[12:20])[0])


def _calc_key(auth_key: bytes, msg_key: bytes, x: int) -> tuple[bytes, bytes]:
    sha256a = hashlib.sha256(msg_key + auth_key[x : x + 36]).digest()
    sha256b = hashlib.sha256(auth_key[x + 40 : x + 76] + msg_key).digest()
    aes_key = sha256a[:8] + sha256b[8:24] + sha256a[24:32]
    aes_iv = sha256b[:8] + sha256a[8:24] + sha256b[24:32]
    return aes_key, aes_iv


class DecryptError(Exception):
    """An encrypted packet failed its integrity check."""


def decrypt_from_client(auth_key: bytes, msg_key: bytes, cipher: bytes) -> bytes:
    """Decrypt a client packet body (after auth_key_id and msg_key), checking msg_key.

    Raises:
        DecryptError: if the length is not a multiple of 16 or msg_key does not match.
    """
    if len(cipher) % 16 or len(cipher) < 32:
        raise DecryptError("bad ciphertext length")
    aes_key, aes_iv = _calc_key(auth_key, msg_key, 0)
    plain = AES.decrypt_ige(cipher, aes_key, aes_iv)
    if hashlib.sha256(auth_key[88:120] + plain).digest()[8:24] != msg_key:
        raise DecryptError("msg_key mismatch")
    return bytes(plain)


def encrypt_to_client(auth_key: bytes, key_id_bytes: bytes, plain: bytes) -> bytes:
    """Encrypt a server message (salt + session + message) for the client, MTProto 2.0."""
    padding = os.urandom(-(len(plain) + 12) % 16 + 12)
    plain = plain + padding
    msg_key = hashlib.sha256(auth_key[96:128] + plain).digest()[8:24]
    aes_key, aes_iv = _calc_key(auth_key, msg_key, 8)
    cipher: bytes = AES.encrypt_ige(plain, aes_key, aes_iv)
    return key_id_bytes + msg_key + cipher


def nonce_key_iv(server_nonce: int, new_nonce: int) -> tuple[bytes, bytes]:
    """The temporary AES key and IV of the DH exchange (as Telethon's ``helpers``)."""
    sn = server_nonce.to_bytes(16, "little", signed=True)
    nn = new_nonce.to_bytes(32, "little", signed=True)
    h1 = hashlib.sha1(nn + sn).digest()
    h2 = hashlib.sha1(sn + nn).digest()
    h3 = hashlib.sha1(nn + nn).digest()
    key = h1 + h2[:12]
    iv = h2[12:20] + h3 + nn[:4]
    return key, iv
