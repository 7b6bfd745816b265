"""MTProto TCP transports on the server side: full, intermediate (plain and padded), abridged.

The transport is detected from the first bytes the client sends, as Telegram does:
``0xef`` abridged, ``0xeeeeeeee`` intermediate, ``0xdddddddd`` padded intermediate, anything
else is the length field of a full-transport packet. Obfuscated transports are not supported.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import trio

MAX_PACKET_BYTES: Final = 2 * 1024 * 1024  # 2 MiB: more than any MTProto packet Telethon sends
RECEIVE_CHUNK_BYTES: Final = 64 * 1024  # 64 KiB per receive_some


class TransportError(Exception):
    """The byte stream does not follow the transport (bad length, checksum, sequence)."""


class PeerClosed(Exception):
    """The client closed its side of the connection."""


class ServerTransport:
    """Frames packets on one accepted TCP stream.

    Attributes:
        kind: ``"full"``, ``"intermediate"``, ``"padded"`` or ``"abridged"`` once detected,
            ``None`` before the first packet.

    Resource handling: reads at most ``RECEIVE_CHUNK_BYTES`` at a time and refuses packets over
    ``MAX_PACKET_BYTES``, so one connection buffers at most about 2 MiB.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self.kind: str | None = None
        self._recv_seq = 0
        self._send_seq = 0

    async def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not chunk:
                raise PeerClosed()
            self._buf += chunk

    async def _take(self, n: int) -> bytes:
        await self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def _detect(self) -> None:
        await self._fill(1)
        if self._buf[0] == 0xEF:
            del self._buf[:1]
            self.kind = "abridged"
            return
        await self._fill(4)
        head = bytes(self._buf[:4])
        if head == b"\xee\xee\xee\xee":
            del self._buf[:4]
            self.kind = "intermediate"
        elif head == b"\xdd\xdd\xdd\xdd":
            del self._buf[:4]
            self.kind = "padded"
        else:
            self.kind = "full"

    async def receive_packet(self) -> bytes:
        """Read the next packet's payload.

        Raises:
            PeerClosed: if the client closed the connection (also mid-packet).
            TransportError: if the framing is invalid.
        """
        if self.kind is None:
            await self._detect()
        kind = self.kind
        if kind == "full":
            length, seq = struct.unpack("<ii", await self._take(8))
            if not 12 <= length <= MAX_PACKET_BYTES:
                raise TransportError(f"bad full-transport length {length}")
            rest = await self._take(length - 8)
            body, crc = rest[:-4], struct.unpack("<I", rest[-4:])[0]
            if zlib.crc32(struct.pack("<ii", length, seq) + body) != crc:
                raise TransportError("bad crc32")
            if seq != self._recv_seq:
                raise TransportError(f"bad sequence number {seq}, expected {self._recv_seq}")
            self._recv_seq += 1
            return body
        if kind == "abridged":
            first = (await self._take(1))[0]
            if first >= 0x7F:
                length = int.from_bytes(await self._take(3), "little") * 4
            else:
                length = first * 4
        else:
            length = struct.unpack("<i", await self._take(4))[0]
            length &= 0x7FFFFFFF  # the top bit is the "quick ack" request flag
        if not 0 < length <= MAX_PACKET_BYTES:
            raise TransportError(f"bad {kind} length {length}")
        body = await self._take(length)
        if kind == "padded":
            body = body[: len(body) - len(body) % 4]
        return body

    def frame(self, payload: bytes) -> bytes:
        """Frame ``payload`` for sending in the detected transport (``full`` if undetected)."""
        kind = self.kind
        if kind == "abridged":
            n = len(payload) >> 2
            if n < 0x7F:
                return bytes((n,)) + payload
            return b"\x7f" + n.to_bytes(3, "little") + payload
        if kind in ("intermediate", "padded"):
            return struct.pack("<i", len(payload)) + payload
        head = struct.pack("<ii", len(payload) + 12, self._send_seq)
        self._send_seq += 1
        return head + payload + struct.pack("<I", zlib.crc32(head + payload))
