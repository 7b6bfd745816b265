"""A loopback MTProxy: the client side of Telegram's MTProxy protocol, in-process on Trio.

``async with open_mtproxy({2: (dc.host, dc.port)}, mode="classic") as proxy:`` listens on a free
port of 127.0.0.1 in the caller's Trio run. Each client opens with the 64-byte obfuscated2 header
(as Telegram's MTProxy reads it, and Telethon's ``MTProxyIO`` writes it):

- client->proxy AES-256-CTR: key ``sha256(header[8:40] + secret)``, iv ``header[40:56]``; the
  whole header goes through it, so the stream after the header continues at counter 64;
- proxy->client AES-256-CTR: the same from the reversed ``header[8:56]`` (key from its first 32
  bytes + secret, iv its last 16), starting at counter 0;
- decrypted bytes 56..60: the protocol tag, ``0xefefefef`` abridged, ``0xeeeeeeee``
  intermediate, ``0xdddddddd`` padded intermediate; bytes 60..62: the DC id, little-endian int16.

The proxy connects to ``dcs[dc_id]`` (or ``dcs[abs(dc_id)]``), sends the plain protocol tag
(``0xef`` / ``0xeeeeeeee`` / ``0xdddddddd``) as a direct client would, and relays the
de-obfuscated stream both ways. It closes the connection, as MTProxy does, on a tag that is no
protocol (a wrong secret decrypts to garbage), on a transport its ``mode`` refuses
(``"classic"``: abridged and intermediate; ``"secure"``: padded only, what ``dd`` secrets ask
for; ``"any"``: all three), and on an unknown DC id.

The fault modes and counters are those of :class:`~mtpoold.testing.Relay` (``refuse``,
``reset``, ``blackhole``, ``blackhole_after_handshake``, ``close_after``, ``corrupt``,
``stall``); byte counts and ``close_after``/``corrupt`` offsets are of the de-obfuscated
stream, bursts count the raw bytes clients send (the 64-byte header included).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final, Literal, final

import trio
from telethon.crypto import AESModeCTR

from ._relay import DEFAULT_BURST_GAP_S, RelayConnection, _Close, _FaultyServer, _Link, _Reader

MTProxyMode = Literal["classic", "secure", "any"]
HEADER_BYTES: Final = 64
SECRET_BYTES: Final = 16

_TAGS: Final = {
    b"\xef\xef\xef\xef": "abridged",
    b"\xee\xee\xee\xee": "intermediate",
    b"\xdd\xdd\xdd\xdd": "padded",
}
_DIRECT_TAG: Final = {
    "abridged": b"\xef",
    "intermediate": b"\xee\xee\xee\xee",
    "padded": b"\xdd\xdd\xdd\xdd",
}
_ACCEPTS: Final[dict[str, frozenset[str]]] = {
    "classic": frozenset({"abridged", "intermediate"}),
    "secure": frozenset({"padded"}),
    "any": frozenset({"abridged", "intermediate", "padded"}),
}


def _stream_cipher(key_material: bytes, iv: bytes, secret: bytes) -> AESModeCTR:
    """AES-256-CTR keyed as obfuscated2 with a secret (Telethon's pyaes-backed ``AESModeCTR``)."""
    return AESModeCTR(hashlib.sha256(key_material + secret).digest(), iv)


def _parse_secret(secret: bytes | str | None) -> bytes:
    if secret is None:
        # Telethon strips a leading dd/ee from a hex secret: a random one starting with those
        # bytes (2 in 256) would be misread by raw Telethon clients handed the plain hex
        while (fresh := os.urandom(SECRET_BYTES))[0] in (0xDD, 0xEE):
            pass
        return fresh
    if isinstance(secret, str):
        text = secret[2:] if secret[:2].lower() in ("dd", "ee") and len(secret) > 32 else secret
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise ValueError("the MTProxy secret must be 16 bytes or 32 hex digits") from None
    if len(secret) != SECRET_BYTES:
        raise ValueError("the MTProxy secret must be 16 bytes or 32 hex digits")
    return secret


@final
class MTProxy(_FaultyServer):
    """A running loopback MTProxy (see the module doc). Build it with :func:`open_mtproxy`.

    Attributes:
        kind: ``"mtproxy"``.
        host, port: where it listens (the port stays the same across ``refuse``).
        secret: the 16-byte secret (test-only; never log it).
        protocol_mode: ``"classic"``, ``"secure"`` or ``"any"`` (transports it accepts).
        dcs: DC id -> ``(host, port)`` it connects to.
        burst_gap_s: client silence, seconds, that makes the next client bytes a new burst.
        connections: every :class:`~mtpoold.testing.RelayConnection` (``transport`` and
            ``dc_id`` filled once the header is read; ``error`` says why one was refused).
        accepted, bytes_up, bytes_down, bursts: as for :class:`~mtpoold.testing.Relay`.
    """

    kind: Final = "mtproxy"

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        dcs: Mapping[int, tuple[str, int]],
        secret: bytes,
        mode: MTProxyMode,
        host: str,
        port: int,
        burst_gap_s: float,
    ) -> None:
        super().__init__(nursery, host=host, port=port, burst_gap_s=burst_gap_s)
        self.dcs = dict(dcs)
        self.secret = secret
        self.protocol_mode: MTProxyMode = mode

    @property
    def secret_hex(self) -> str:
        """The secret as 32 hex digits (what ``ConnectionTcpMTProxy*`` clients take)."""
        return self.secret.hex()

    @property
    def dd_secret_hex(self) -> str:
        """``"dd"`` + :attr:`secret_hex`: the client must use padded intermediate (Telethon:
        ``ConnectionTcpMTProxyRandomizedIntermediate``)."""
        return "dd" + self.secret.hex()

    @property
    def telethon_proxy(self) -> tuple[str, int, str]:
        """``proxy=`` for ``TelegramClient(connection=ConnectionTcpMTProxy...)``, plain secret
        (``dd``-prefixed when the secret itself starts with dd/ee, which Telethon would strip:
        the connection class, not the prefix, chooses the transport)."""
        if self.secret_hex[:2] in ("dd", "ee"):
            return (self.host, self.port, self.dd_secret_hex)
        return (self.host, self.port, self.secret_hex)

    @property
    def telethon_proxy_dd(self) -> tuple[str, int, str]:
        """``proxy=`` with the ``dd`` secret (``ConnectionTcpMTProxyRandomizedIntermediate``)."""
        return (self.host, self.port, self.dd_secret_hex)

    @property
    def url(self) -> str:
        """``mtproxy://host:port`` (without the secret)."""
        return f"mtproxy://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"<MTProxy {self.protocol_mode} {self.host}:{self.port} mode={self.mode},"
            f" {len(self.open_connections)} open, accepted={self.accepted}>"
        )

    async def _open_link(self, conn: RelayConnection, r: _Reader) -> _Link:
        header = await r.take(HEADER_BYTES)
        decrypt = _stream_cipher(header[8:40], header[40:56], self.secret)
        plain = bytes(decrypt.encrypt(header))
        transport = _TAGS.get(plain[56:60])
        if transport is None:
            raise _Close("unknown protocol tag")
        conn.transport = transport
        if transport not in _ACCEPTS[self.protocol_mode]:
            raise _Close(f"{transport} transport refused in {self.protocol_mode} mode")
        dc_id = int.from_bytes(plain[60:62], "little", signed=True)
        conn.dc_id = dc_id
        address = self.dcs.get(dc_id) or self.dcs.get(abs(dc_id))
        if address is None:
            raise _Close("unknown DC")
        stream = await self._connect(conn, address)
        try:
            await stream.send_all(_DIRECT_TAG[transport])
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        reversed_middle = header[55:7:-1]
        encrypt = _stream_cipher(reversed_middle[:32], reversed_middle[32:48], self.secret)

        def up(data: bytes) -> bytes:
            return bytes(decrypt.encrypt(data))

        def down(data: bytes) -> bytes:
            return bytes(encrypt.encrypt(data))

        return _Link(stream, up, down)


@asynccontextmanager
async def open_mtproxy(
    dcs: Mapping[int, tuple[str, int]],
    *,
    secret: bytes | str | None = None,
    mode: MTProxyMode = "any",
    host: str = "127.0.0.1",
    port: int = 0,
    burst_gap_s: float = DEFAULT_BURST_GAP_S,
) -> AsyncIterator[MTProxy]:
    """Run a loopback :class:`MTProxy` in the caller's Trio run for the ``async with`` block.

    Args:
        dcs: DC id -> ``(host, port)``, e.g. ``{2: (dc.host, dc.port)}``.
        secret: 16 bytes, or 32 hex digits (a ``dd``/``ee`` prefix is dropped); ``None`` picks
            a random one (:attr:`MTProxy.secret`).
        mode: ``"classic"`` (abridged, intermediate), ``"secure"`` (padded only) or ``"any"``.
        host: listen address (IPv4).
        port: listen port; 0 picks a free one.
        burst_gap_s: client silence, seconds, that starts a new burst.

    Yields:
        The serving proxy in fault mode ``pass``. Leaving the block closes every connection.

    Raises:
        ValueError: on a bad secret or mode, or an empty ``dcs``.
        OSError: if the address cannot be bound.
    """
    key = _parse_secret(secret)
    if mode not in _ACCEPTS:
        raise ValueError(f"unknown MTProxy mode {mode!r}")
    if not dcs:
        raise ValueError("give at least one DC address")
    if burst_gap_s < 0:
        raise ValueError(f"burst_gap_s must be >= 0: {burst_gap_s}")
    async with trio.open_nursery() as nursery:
        proxy = MTProxy(
            nursery,
            dcs=dcs,
            secret=key,
            mode=mode,
            host=host,
            port=port,
            burst_gap_s=burst_gap_s,
        )
        proxy._start_listening()
        try:
            yield proxy
        finally:
            proxy._stop_listening()
            nursery.cancel_scope.cancel()
