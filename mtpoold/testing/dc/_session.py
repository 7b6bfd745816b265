"""Per-connection MTProto state: the auth key exchange and the encrypted message layer.

:class:`AuthKeyEntry` is what the DC remembers about one auth key (who it is logged in as, the
server salt, login progress). :class:`ConnectionState` is one TCP connection's view: its
handshake in progress, current key and session id, and the server's msg_id / seq_no counters.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
from telethon.crypto import AES
from telethon.extensions import BinaryReader
from telethon.tl import functions, types

from . import _crypto

MSG_CONTAINER_ID: Final = 0x73F1F8DC
MAX_HANDSHAKES: Final = 4  # concurrent DH exchanges kept per connection


class ProtocolError(Exception):
    """The client broke MTProto; the connection must be closed.

    Attributes:
        transport_code: a negative transport error to send first (e.g. -404), or ``None``.
    """

    def __init__(self, message: str, *, transport_code: int | None = None) -> None:
        super().__init__(message)
        self.transport_code = transport_code


@attrs.define(eq=False)
class SrpState:
    """An SRP challenge handed out by ``account.getPassword``."""

    srp_id: int
    user_id: int
    b: int
    B: int
    v: int


@attrs.define(eq=False, repr=False)
class AuthKeyEntry:
    """One auth key the DC knows.

    Attributes:
        key: the 256 key bytes; key_id: its id; salt: the valid server salt.
        user_id: the user it is logged in as, ``None`` while not authorized.
        login_hashes: phone -> phone_code_hash handed out by ``auth.sendCode``.
        pending_2fa_user: user who passed the code step and still owes the password.
        srp: the current SRP challenge.
    """

    key: bytes
    key_id: int
    key_id_bytes: bytes
    salt: int
    user_id: int | None = None
    login_hashes: dict[str, str] = attrs.field(factory=dict)
    pending_2fa_user: int | None = None
    srp: SrpState | None = None

    @classmethod
    def create(cls, key: bytes, salt: int, user_id: int | None = None) -> AuthKeyEntry:
        """Build an entry, computing the key id."""
        key_id = _crypto.auth_key_id(key)
        return cls(key, key_id, struct.pack("<Q", key_id), salt, user_id)

    def __repr__(self) -> str:
        return f"<AuthKeyEntry {self.key_id:#018x} user={self.user_id}>"


@attrs.define(eq=False)
class _Handshake:
    nonce: int
    server_nonce: int
    new_nonce: int = 0
    a: int = 0
    key: bytes = b""
    iv: bytes = b""


# pq = 1229739323 * 1402015859: small enough for Telethon's Pollard rho in microseconds.
_P: Final = 1229739323
_Q: Final = 1402015859
_PQ_BYTES: Final = _crypto.int_bytes(_P * _Q)


def _unix_msg_id() -> int:
    now = time.time()
    return (int(now * 2**32)) & ~3


@attrs.frozen
class Incoming:
    """One decrypted client packet: header fields and the raw message body."""

    entry: AuthKeyEntry
    salt: int
    session_id: int
    msg_id: int
    seq_no: int
    body: bytes


class ConnectionState:
    """MTProto state of one TCP connection (server side).

    Args:
        rsa_key: the DC's RSA key for the handshake.
        lookup_key: auth_key_id -> entry, ``None`` if unknown.
        register_key: called with a fresh key made by the handshake; returns its entry.
    """

    def __init__(
        self,
        rsa_key: _crypto.ServerRsaKey,
        lookup_key: Callable[[int], AuthKeyEntry | None],
        register_key: Callable[[bytes], AuthKeyEntry],
    ) -> None:
        self._rsa = rsa_key
        self._lookup = lookup_key
        self._register = register_key
        self._handshakes: dict[int, _Handshake] = {}
        self.entry: AuthKeyEntry | None = None
        self.session_id: int | None = None
        self._last_msg_id = 0
        self._seq = 0

    # -- plain (unencrypted) messages: the auth key exchange --------------------------------

    def handle_plain(self, packet: bytes) -> bytes:
        """Answer one unencrypted packet of the DH exchange; returns the plain packet to send.

        Raises:
            ProtocolError: on anything but a well-formed exchange step.
        """
        if len(packet) < 24:
            raise ProtocolError("short plain packet")
        length = struct.unpack_from("<i", packet, 16)[0]
        if length <= 0 or 20 + length > len(packet):
            raise ProtocolError("bad plain length")
        try:
            with BinaryReader(packet[20 : 20 + length]) as reader:
                obj = reader.tgread_object()
        except Exception as exc:
            raise ProtocolError(f"undecodable plain message: {exc!r}") from None
        if isinstance(obj, functions.ReqPqMultiRequest | functions.ReqPqRequest):
            answer = self._req_pq(obj.nonce)
        elif isinstance(obj, functions.ReqDHParamsRequest):
            answer = self._req_dh_params(obj)
        elif isinstance(obj, functions.SetClientDHParamsRequest):
            answer = self._set_client_dh_params(obj)
        else:
            raise ProtocolError(f"unexpected plain message {type(obj).__name__}")
        return struct.pack("<qqi", 0, self.next_msg_id(), len(answer)) + answer

    def _req_pq(self, nonce: int) -> bytes:
        server_nonce = int.from_bytes(os.urandom(16), "big", signed=True)
        if len(self._handshakes) >= MAX_HANDSHAKES:
            self._handshakes.pop(next(iter(self._handshakes)))
        self._handshakes[server_nonce] = _Handshake(nonce, server_nonce)
        return bytes(types.ResPQ(nonce, server_nonce, _PQ_BYTES, [self._rsa.fingerprint]))

    def _handshake(self, nonce: int, server_nonce: int) -> _Handshake:
        hs = self._handshakes.get(server_nonce)
        if hs is None or hs.nonce != nonce:
            raise ProtocolError("unknown nonce in DH exchange")
        return hs

    def _req_dh_params(self, req: Any) -> bytes:
        hs = self._handshake(req.nonce, req.server_nonce)
        if req.public_key_fingerprint != self._rsa.fingerprint:
            raise ProtocolError("unknown RSA fingerprint")
        if req.p != _crypto.int_bytes(_P) or req.q != _crypto.int_bytes(_Q):
            raise ProtocolError("wrong p, q")
        try:
            plain = self._rsa.decrypt_raw(req.encrypted_data)
            with BinaryReader(plain[20:]) as reader:
                inner = reader.tgread_object()
                used = reader.tell_position()
        except Exception as exc:
            raise ProtocolError(f"undecodable p_q_inner_data: {exc!r}") from None
        if hashlib.sha1(plain[20 : 20 + used]).digest() != plain[:20]:
            raise ProtocolError("p_q_inner_data hash mismatch")
        if not isinstance(inner, types.PQInnerData | types.PQInnerDataDc):
            raise ProtocolError(f"unexpected {type(inner).__name__}")
        if inner.nonce != hs.nonce or inner.server_nonce != hs.server_nonce:
            raise ProtocolError("nonce mismatch in p_q_inner_data")
        hs.new_nonce = inner.new_nonce
        safety = 2 ** (2048 - 64)
        while True:
            hs.a = int.from_bytes(os.urandom(256), "big")
            g_a = pow(_crypto.DH_G, hs.a, _crypto.DH_PRIME)
            if safety <= g_a <= _crypto.DH_PRIME - safety:
                break
        inner_dh = bytes(
            types.ServerDHInnerData(
                nonce=hs.nonce,
                server_nonce=hs.server_nonce,
                g=_crypto.DH_G,
                dh_prime=_crypto.DH_PRIME_BYTES,
                g_a=_crypto.int_bytes(g_a),
                server_time=int(time.time()),
            )
        )
        answer = hashlib.sha1(inner_dh).digest() + inner_dh
        answer += os.urandom(-len(answer) % 16)
        hs.key, hs.iv = _crypto.nonce_key_iv(hs.server_nonce, hs.new_nonce)
        encrypted = AES.encrypt_ige(answer, hs.key, hs.iv)
        return bytes(types.ServerDHParamsOk(hs.nonce, hs.server_nonce, encrypted))

    def _set_client_dh_params(self, req: Any) -> bytes:
        hs = self._handshake(req.nonce, req.server_nonce)
        if not hs.key or len(req.encrypted_data) % 16:
            raise ProtocolError("set_client_DH_params out of order")
        plain = AES.decrypt_ige(req.encrypted_data, hs.key, hs.iv)
        try:
            with BinaryReader(plain[20:]) as reader:
                inner = reader.tgread_object()
                used = reader.tell_position()
        except Exception as exc:
            raise ProtocolError(f"undecodable client_DH_inner_data: {exc!r}") from None
        if hashlib.sha1(plain[20 : 20 + used]).digest() != plain[:20]:
            raise ProtocolError("client_DH_inner_data hash mismatch")
        if not isinstance(inner, types.ClientDHInnerData):
            raise ProtocolError(f"unexpected {type(inner).__name__}")
        g_b = int.from_bytes(inner.g_b, "big")
        if not 1 < g_b < _crypto.DH_PRIME - 1:
            raise ProtocolError("g_b out of range")
        # Telethon keeps the minimal-length big-endian bytes of g^ab: mirror it exactly.
        key = _crypto.int_bytes(pow(g_b, hs.a, _crypto.DH_PRIME))
        del self._handshakes[hs.server_nonce]
        self._register(key)
        aux_hash = struct.unpack("<Q", hashlib.sha1(key).digest()[:8])[0]
        nn = hs.new_nonce.to_bytes(32, "little", signed=True)
        digest = hashlib.sha1(nn + struct.pack("<BQ", 1, aux_hash)).digest()
        new_nonce_hash1 = int.from_bytes(digest[4:20], "little", signed=True)
        return bytes(types.DhGenOk(hs.nonce, hs.server_nonce, new_nonce_hash1))

    # -- encrypted messages -----------------------------------------------------------------

    def decrypt(self, packet: bytes) -> Incoming:
        """Decrypt one encrypted client packet.

        Raises:
            ProtocolError: unknown auth key (with transport code -404), failed integrity check
                or malformed header.
        """
        key_id = struct.unpack_from("<Q", packet, 0)[0]
        entry = self.entry
        if entry is None or entry.key_id != key_id:
            entry = self._lookup(key_id)
            if entry is None:
                raise ProtocolError("unknown auth key", transport_code=-404)
            self.entry = entry
        try:
            plain = _crypto.decrypt_from_client(entry.key, packet[8:24], packet[24:])
        except _crypto.DecryptError as exc:
            raise ProtocolError(str(exc)) from None
        salt, session_id, msg_id, seq_no, length = struct.unpack_from("<qqqii", plain, 0)
        if length < 4 or 32 + length > len(plain) or length % 4:
            raise ProtocolError("bad message length")
        return Incoming(entry, salt, session_id, msg_id, seq_no, plain[32 : 32 + length])

    def next_msg_id(self) -> int:
        """A fresh server msg_id (odd, increasing, wall-clock based as the client checks)."""
        msg_id = _unix_msg_id() | 1
        if msg_id <= self._last_msg_id:
            msg_id = self._last_msg_id + 4
        self._last_msg_id = msg_id
        return msg_id

    def next_seq_no(self, content_related: bool) -> int:
        """The seq_no for the next message sent in this session."""
        if content_related:
            seq = self._seq * 2 + 1
            self._seq += 1
            return seq
        return self._seq * 2

    def set_session(self, session_id: int) -> bool:
        """Note the client's session id; ``True`` if it is new for this connection."""
        if session_id == self.session_id:
            return False
        self.session_id = session_id
        self._seq = 0
        return True

    def encrypt(
        self, messages: list[tuple[bytes, bool]], *, session_id: int | None = None
    ) -> bytes:
        """Encrypt ``(body, content_related)`` messages as one packet (a container if many).

        ``session_id`` overrides the connection's session id (the ``wrong_session`` fault).

        Raises:
            RuntimeError: if no key or session is established yet.
        """
        entry = self.entry
        if entry is None or self.session_id is None:
            raise RuntimeError("no session")
        if len(messages) == 1:
            body, related = messages[0]
            msg = (
                struct.pack("<qii", self.next_msg_id(), self.next_seq_no(related), len(body)) + body
            )
        else:
            parts = [struct.pack("<Ii", MSG_CONTAINER_ID, len(messages))]
            for body, related in messages:
                parts.append(
                    struct.pack("<qii", self.next_msg_id(), self.next_seq_no(related), len(body))
                )
                parts.append(body)
            inner = b"".join(parts)
            msg = (
                struct.pack("<qii", self.next_msg_id(), self.next_seq_no(False), len(inner)) + inner
            )
        session = self.session_id if session_id is None else session_id
        plain = struct.pack("<qq", entry.salt, session) + msg
        return _crypto.encrypt_to_client(entry.key, entry.key_id_bytes, plain)
