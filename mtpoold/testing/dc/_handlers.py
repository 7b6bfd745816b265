"""Answers to TL methods, built from the world with Telethon's own TL classes.

:class:`Answerer` maps each supported request class to a method returning the TL result (or a
list, serialized as ``Vector``), or raising :class:`RpcFailure`. Anything not in its table is
answered 400 ``METHOD_INVALID``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import struct
import time
from collections.abc import Callable
from typing import Any, Final

from telethon import password as tpassword
from telethon.tl import TLObject, functions, types

from . import _crypto
from ._limits import FLOOD_CODE, Limits
from ._session import AuthKeyEntry, SrpState
from ._world import Channel, Message, User, World

VECTOR_ID: Final = 0x1CB5C415
LOGIN_CODE: Final = "12345"  # the code auth.signIn accepts for every phone
CONFIG_TTL_S: Final = 60.0  # seconds a serialized help.getConfig answer is reused
HISTORY_LIMIT_MAX: Final = 100

WRAPPERS: Final = (
    functions.InvokeWithLayerRequest,
    functions.InitConnectionRequest,
    functions.InvokeWithoutUpdatesRequest,
    functions.InvokeAfterMsgRequest,
    functions.InvokeAfterMsgsRequest,
)


class RpcFailure(Exception):
    """Answer the call with ``rpc_error(code, message)``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


def unwrap(request: Any) -> Any:
    """Strip invokeWithLayer / initConnection / invokeWithoutUpdates / invokeAfterMsg(s)."""
    while isinstance(request, WRAPPERS):
        request = request.query
    return request


@functools.cache
def _method_name_of(cls: type) -> str:
    name = cls.__name__.removesuffix("Request")
    module = cls.__module__.removeprefix("telethon.tl.functions")
    return f"{module.lstrip('.')}.{name}" if module else name


def method_name(request: Any) -> str:
    """The TL method name as Telethon spells it, e.g. ``"contacts.ResolveUsername"``."""
    return _method_name_of(type(request))  # type: ignore[arg-type]  # python/mypy#11470


def serialize_result(result: TLObject | list[TLObject] | bytes) -> bytes:
    """TL bytes of a handler result (a list becomes a ``Vector``)."""
    if isinstance(result, bytes):
        return result
    if isinstance(result, list):
        return struct.pack("<Ii", VECTOR_ID, len(result)) + b"".join(bytes(x) for x in result)
    return bytes(result)


def _date(unix: int | float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(unix), dt.UTC)


@functools.lru_cache(maxsize=64)
def _srp_verifier(password: str, salt1: bytes, salt2: bytes) -> int:
    algo = types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
        salt1, salt2, _crypto.DH_G, _crypto.DH_PRIME_BYTES
    )
    x = int.from_bytes(tpassword.compute_hash(algo, password), "big")
    return pow(_crypto.DH_G, x, _crypto.DH_PRIME)


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


_P_HASH: Final = _crypto.DH_PRIME_BYTES
_G_HASH: Final = _crypto.DH_G.to_bytes(256, "big")
_SRP_K: Final = int.from_bytes(_h(_P_HASH, _G_HASH), "big")


class Answerer:
    """Answers RPC calls for one DC.

    Args:
        world: the fixture world.
        seed: the DC seed (login hashes and SRP salts derive from it).
        dc_id, host, port: what ``help.getConfig`` advertises.
        limits: the DC's limits (slow mode is checked by the send handlers); ``None``: none.
    """

    def __init__(
        self,
        world: World,
        seed: bytes,
        dc_id: int,
        host: str,
        port: int,
        *,
        limits: Limits | None = None,
    ) -> None:
        self.world = world
        self.limits = limits
        self._sent: dict[int, int] = {}  # chat id -> messages sent to it through the DC
        self._joined: set[tuple[int, int]] = set()  # (user id, channel id) joined by invite
        self._seed = seed
        self.dc_id = dc_id
        self.host = host
        self.port = port
        self._config: tuple[float, bytes] | None = None
        self._srp_ids = 0
        f = functions
        self._table: dict[type, tuple[Callable[[AuthKeyEntry, Any], Any], bool]] = {
            f.help.GetConfigRequest: (self.get_config, False),
            f.help.GetNearestDcRequest: (self.get_nearest_dc, False),
            f.updates.GetStateRequest: (self.get_state, True),
            f.updates.GetDifferenceRequest: (self.get_difference, True),
            f.auth.SendCodeRequest: (self.send_code, False),
            f.auth.SignInRequest: (self.sign_in, False),
            f.auth.LogOutRequest: (self.log_out, True),
            f.account.GetPasswordRequest: (self.get_password, False),
            f.auth.CheckPasswordRequest: (self.check_password, False),
            f.users.GetUsersRequest: (self.get_users, True),
            f.users.GetFullUserRequest: (self.get_full_user, True),
            f.contacts.ResolveUsernameRequest: (self.resolve_username, True),
            f.contacts.ResolvePhoneRequest: (self.resolve_phone, True),
            f.channels.GetChannelsRequest: (self.get_channels, True),
            f.channels.GetFullChannelRequest: (self.get_full_channel, True),
            f.channels.GetMessagesRequest: (self.channel_messages, True),
            f.messages.GetMessagesRequest: (self.get_messages, True),
            f.messages.GetChatsRequest: (self.get_chats, True),
            f.messages.GetFullChatRequest: (self.get_full_chat, True),
            f.messages.GetMessagesViewsRequest: (self.get_messages_views, True),
            f.messages.GetHistoryRequest: (self.get_history, True),
            f.messages.CheckChatInviteRequest: (self.check_chat_invite, True),
            f.messages.ImportChatInviteRequest: (self.import_chat_invite, True),
            f.messages.SendMessageRequest: (self.send_message, True),
        }

    # -- dispatch -----------------------------------------------------------------------------

    def answer(self, entry: AuthKeyEntry, request: Any) -> bytes:
        """Serialized result of ``request`` (already unwrapped) for the key ``entry``.

        Raises:
            RpcFailure: the error to send instead.
        """
        item = self._table.get(type(request))
        if item is None:
            raise RpcFailure(400, "METHOD_INVALID")
        handler, needs_user = item
        if needs_user:
            self._me(entry)
        return serialize_result(handler(entry, request))

    def _me(self, entry: AuthKeyEntry) -> User:
        if entry.user_id is None:
            raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
        user = self.world.user_by_id(entry.user_id)
        if user is None:
            raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
        if user.deactivated:
            raise RpcFailure(401, "USER_DEACTIVATED")
        return user

    # -- TL builders --------------------------------------------------------------------------

    def user_tl(self, user: User, *, me: int | None = None, phone: bool = False) -> types.User:
        """``types.User`` for ``user`` as seen by user ``me``; its phone number only to itself
        or with ``phone`` (a user found by its number, as Telegram shows it then)."""
        is_self = user.id == me
        if user.deactivated:
            return types.User(id=user.id, deleted=True, access_hash=user.access_hash)
        return types.User(
            id=user.id,
            is_self=is_self or None,
            bot=user.bot or None,
            verified=user.verified or None,
            scam=user.scam or None,
            fake=user.fake or None,
            access_hash=user.access_hash,
            first_name=user.first_name,
            last_name=user.last_name,
            username=user.username,
            phone=user.phone if is_self or phone else None,
            bot_info_version=1 if user.bot else None,
        )

    def channel_tl(
        self, ch: Channel, *, member: bool = False
    ) -> types.Channel | types.ChannelForbidden:
        """``types.Channel`` (``ChannelForbidden`` for a private one, unless seen by a
        ``member``)."""
        if ch.private and not member:
            return types.ChannelForbidden(
                id=ch.id,
                access_hash=ch.access_hash,
                title=ch.title,
                broadcast=not ch.megagroup or None,
                megagroup=ch.megagroup or None,
            )
        return types.Channel(
            id=ch.id,
            title=ch.title,
            photo=types.ChatPhotoEmpty(),
            date=_date(ch.date),
            broadcast=not ch.megagroup or None,
            megagroup=ch.megagroup or None,
            verified=ch.verified or None,
            scam=ch.scam or None,
            fake=ch.fake or None,
            access_hash=ch.access_hash,
            username=ch.username,
            participants_count=ch.participants_count,
        )

    def message_tl(self, ch: Channel, m: Message) -> types.Message:
        """``types.Message`` for message ``m`` of ``ch``."""
        reactions = None
        if m.reactions:
            reactions = types.MessageReactions(
                results=[
                    types.ReactionCount(types.ReactionEmoji(e), n) for e, n in m.reactions.items()
                ]
            )
        return types.Message(
            id=m.id,
            peer_id=types.PeerChannel(ch.id),
            date=_date(m.date),
            message=m.text,
            post=not ch.megagroup or None,
            from_id=types.PeerUser(m.from_id) if m.from_id is not None else None,
            # Telegram sends views and forwards together (Telethon's serializer insists)
            views=m.views if m.views is not None or m.forwards is None else 0,
            forwards=m.forwards if m.forwards is not None or m.views is None else 0,
            replies=(
                types.MessageReplies(replies=m.replies, replies_pts=0)
                if m.replies is not None
                else None
            ),
            reactions=reactions,
        )

    def _senders(self, messages: list[Message], me: int | None) -> list[types.User]:
        ids = sorted({m.from_id for m in messages if m.from_id is not None})
        return [self.user_tl(u, me=me) for i in ids if (u := self.world.user_by_id(i))]

    # -- input peers --------------------------------------------------------------------------

    def _input_user(self, entry: AuthKeyEntry, iu: Any, error: str = "USER_ID_INVALID") -> User:
        if isinstance(iu, types.InputUserSelf | types.InputPeerSelf):
            return self._me(entry)
        if isinstance(iu, types.InputUser | types.InputPeerUser):
            user = self.world.user_by_id(iu.user_id)
            if user is not None and user.access_hash == iu.access_hash:
                return user
        raise RpcFailure(400, error)

    def _input_channel(self, ic: Any) -> Channel:
        if isinstance(ic, types.InputChannel | types.InputPeerChannel):
            ch = self.world.channel_by_id(ic.channel_id)
            if ch is not None and ch.access_hash == ic.access_hash:
                return ch
        raise RpcFailure(400, "CHANNEL_INVALID")

    def _public_channel(self, ic: Any) -> Channel:
        ch = self._input_channel(ic)
        if ch.private:
            raise RpcFailure(400, "CHANNEL_PRIVATE")
        return ch

    def _input_peer(self, entry: AuthKeyEntry, peer: Any) -> User | Channel:
        if isinstance(peer, types.InputPeerChannel):
            return self._public_channel(peer)
        if isinstance(peer, types.InputPeerUser | types.InputPeerSelf):
            return self._input_user(entry, peer, "PEER_ID_INVALID")
        raise RpcFailure(400, "PEER_ID_INVALID")

    # -- help / updates -----------------------------------------------------------------------

    def get_config(self, entry: AuthKeyEntry, req: Any) -> bytes:
        now = time.time()
        if self._config is not None and now - self._config[0] < CONFIG_TTL_S:
            return self._config[1]
        config = types.Config(
            date=_date(now),
            expires=_date(now + 3600),
            test_mode=False,
            this_dc=self.dc_id,
            dc_options=[types.DcOption(id=self.dc_id, ip_address=self.host, port=self.port)],
            dc_txt_domain_name="",
            chat_size_max=200,
            megagroup_size_max=200000,
            forwarded_count_max=100,
            online_update_period_ms=210000,
            offline_blur_timeout_ms=5000,
            offline_idle_timeout_ms=30000,
            online_cloud_timeout_ms=300000,
            notify_cloud_delay_ms=30000,
            notify_default_delay_ms=1500,
            push_chat_period_ms=60000,
            push_chat_limit=2,
            edit_time_limit=172800,
            revoke_time_limit=2147483647,
            revoke_pm_time_limit=2147483647,
            rating_e_decay=2419200,
            stickers_recent_limit=200,
            channels_read_media_period=604800,
            call_receive_timeout_ms=20000,
            call_ring_timeout_ms=90000,
            call_connect_timeout_ms=30000,
            call_packet_timeout_ms=10000,
            me_url_prefix="https://t.me/",
            caption_length_max=1024,
            message_length_max=4096,
            webfile_dc_id=self.dc_id,
        )
        data = bytes(config)
        self._config = (now, data)
        return data

    def get_nearest_dc(self, entry: AuthKeyEntry, req: Any) -> types.NearestDc:
        return types.NearestDc(country="US", this_dc=self.dc_id, nearest_dc=self.dc_id)

    def get_state(self, entry: AuthKeyEntry, req: Any) -> types.updates.State:
        return types.updates.State(pts=1, qts=0, date=_date(time.time()), seq=1, unread_count=0)

    def get_difference(self, entry: AuthKeyEntry, req: Any) -> types.updates.DifferenceEmpty:
        return types.updates.DifferenceEmpty(date=_date(time.time()), seq=1)

    # -- login --------------------------------------------------------------------------------

    def _phone_code_hash(self, entry: AuthKeyEntry, phone: str) -> str:
        return hashlib.sha256(
            b"code\x00" + self._seed + phone.encode() + entry.key_id_bytes
        ).hexdigest()[:18]

    def _login_user(self, phone: str) -> User:
        user = self.world.user_by_phone(phone)
        if user is None:
            raise RpcFailure(400, "PHONE_NUMBER_INVALID")
        if user.deactivated:
            raise RpcFailure(400, "PHONE_NUMBER_BANNED")
        return user

    def send_code(self, entry: AuthKeyEntry, req: Any) -> types.auth.SentCode:
        user = self._login_user(req.phone_number)
        code_hash = self._phone_code_hash(entry, user.phone or "")
        entry.login_hashes[user.phone or ""] = code_hash
        return types.auth.SentCode(
            type=types.auth.SentCodeTypeApp(length=len(LOGIN_CODE)), phone_code_hash=code_hash
        )

    def _authorization(self, entry: AuthKeyEntry, user: User) -> types.auth.Authorization:
        entry.user_id = user.id
        entry.pending_2fa_user = None
        entry.srp = None
        entry.login_hashes.clear()
        return types.auth.Authorization(user=self.user_tl(user, me=user.id))

    def sign_in(self, entry: AuthKeyEntry, req: Any) -> types.auth.Authorization:
        user = self._login_user(req.phone_number)
        expected = entry.login_hashes.get(user.phone or "")
        if not req.phone_code_hash or expected != req.phone_code_hash:
            raise RpcFailure(400, "PHONE_CODE_EXPIRED")
        if not req.phone_code:
            raise RpcFailure(400, "PHONE_CODE_EMPTY")
        if req.phone_code != LOGIN_CODE:
            raise RpcFailure(400, "PHONE_CODE_INVALID")
        if user.password is not None:
            entry.pending_2fa_user = user.id
            raise RpcFailure(401, "SESSION_PASSWORD_NEEDED")
        return self._authorization(entry, user)

    def log_out(self, entry: AuthKeyEntry, req: Any) -> types.auth.LoggedOut:
        entry.user_id = None
        return types.auth.LoggedOut()

    def _srp_salts(self, user: User) -> tuple[bytes, bytes]:
        phone = (user.phone or str(user.id)).encode()
        return (
            _crypto.derive_bytes(self._seed, b"srp-salt1:" + phone, 40),
            _crypto.derive_bytes(self._seed, b"srp-salt2:" + phone, 16),
        )

    def get_password(self, entry: AuthKeyEntry, req: Any) -> types.account.Password:
        user_id = entry.user_id if entry.user_id is not None else entry.pending_2fa_user
        user = self.world.user_by_id(user_id) if user_id is not None else None
        new_algo = types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            os.urandom(32), os.urandom(16), _crypto.DH_G, _crypto.DH_PRIME_BYTES
        )
        common = dict(
            new_algo=new_algo,
            new_secure_algo=types.SecurePasswordKdfAlgoUnknown(),
            secure_random=os.urandom(32),
        )
        if user is None or user.password is None:
            if user_id is None:
                raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
            return types.account.Password(has_password=False, **common)
        salt1, salt2 = self._srp_salts(user)
        v = _srp_verifier(user.password, salt1, salt2)
        b = int.from_bytes(os.urandom(256), "big")
        big_b = (_SRP_K * v + pow(_crypto.DH_G, b, _crypto.DH_PRIME)) % _crypto.DH_PRIME
        self._srp_ids += 1
        srp_id = int.from_bytes(hashlib.sha256(os.urandom(16)).digest()[:8], "little", signed=True)
        entry.srp = SrpState(srp_id, user.id, b, big_b, v)
        return types.account.Password(
            has_password=True,
            current_algo=types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
                salt1, salt2, _crypto.DH_G, _crypto.DH_PRIME_BYTES
            ),
            srp_B=big_b.to_bytes(256, "big"),
            srp_id=srp_id,
            hint="",
            **common,
        )

    def check_password(self, entry: AuthKeyEntry, req: Any) -> types.auth.Authorization:
        check = req.password
        srp = entry.srp
        if not isinstance(check, types.InputCheckPasswordSRP):
            raise RpcFailure(400, "PASSWORD_HASH_INVALID")
        if srp is None or srp.srp_id != check.srp_id:
            raise RpcFailure(400, "SRP_ID_INVALID")
        if entry.user_id is None and entry.pending_2fa_user != srp.user_id:
            raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
        user = self.world.user_by_id(srp.user_id)
        if user is None or user.password is None:
            raise RpcFailure(400, "PASSWORD_HASH_INVALID")
        p = _crypto.DH_PRIME
        big_a = int.from_bytes(check.A, "big")
        if not 0 < big_a < p:
            raise RpcFailure(400, "SRP_PASSWORD_CHANGED")
        a_bytes = big_a.to_bytes(256, "big")
        b_bytes = srp.B.to_bytes(256, "big")
        u = int.from_bytes(_h(a_bytes, b_bytes), "big")
        s = pow(big_a * pow(srp.v, u, p) % p, srp.b, p)
        k = _h(s.to_bytes(256, "big"))
        salt1, salt2 = self._srp_salts(user)
        m1 = _h(
            bytes(x ^ y for x, y in zip(_h(_P_HASH), _h(_G_HASH), strict=True)),
            _h(salt1),
            _h(salt2),
            a_bytes,
            b_bytes,
            k,
        )
        entry.srp = None
        if m1 != check.M1:
            raise RpcFailure(400, "PASSWORD_HASH_INVALID")
        return self._authorization(entry, user)

    # -- users / contacts ---------------------------------------------------------------------

    def get_users(self, entry: AuthKeyEntry, req: Any) -> list[types.User]:
        # Like Telegram, users that do not exist are left out of the answer (a known user
        # with a wrong access hash is still USER_ID_INVALID).
        me = entry.user_id
        known = [
            iu
            for iu in req.id
            if not isinstance(iu, types.InputUser | types.InputPeerUser)
            or self.world.user_by_id(iu.user_id) is not None
        ]
        return [self.user_tl(self._input_user(entry, iu), me=me) for iu in known]

    def get_full_user(self, entry: AuthKeyEntry, req: Any) -> types.users.UserFull:
        user = self._input_user(entry, req.id)
        full = types.UserFull(
            id=user.id,
            settings=types.PeerSettings(),
            notify_settings=types.PeerNotifySettings(),
            common_chats_count=0,
            about=user.about or None,
        )
        return types.users.UserFull(
            full_user=full, chats=[], users=[self.user_tl(user, me=entry.user_id)]
        )

    def resolve_username(self, entry: AuthKeyEntry, req: Any) -> types.contacts.ResolvedPeer:
        name = req.username.lstrip("@")
        if not name:
            raise RpcFailure(400, "USERNAME_INVALID")
        target = self.world.by_username(name)
        if target is None or (isinstance(target, User) and target.deactivated):
            raise RpcFailure(400, "USERNAME_NOT_OCCUPIED")
        if isinstance(target, Channel):
            if target.private:
                raise RpcFailure(400, "CHANNEL_PRIVATE")
            return types.contacts.ResolvedPeer(
                peer=types.PeerChannel(target.id), chats=[self.channel_tl(target)], users=[]
            )
        return types.contacts.ResolvedPeer(
            peer=types.PeerUser(target.id),
            chats=[],
            users=[self.user_tl(target, me=entry.user_id)],
        )

    def resolve_phone(self, entry: AuthKeyEntry, req: Any) -> types.contacts.ResolvedPeer:
        """``contacts.resolvePhone``: the user with that phone number (digits, a leading ``+``
        ignored); 400 ``PHONE_NOT_OCCUPIED`` for a number no (active) user has
        (https://core.telegram.org/method/contacts.resolvePhone). The world has no phone
        privacy settings: every user is findable by number, and the user comes with its
        ``phone`` set, as Telegram sends it to whoever knew the number."""
        phone = "".join(ch for ch in str(req.phone) if ch.isdigit())
        user = self.world.user_by_phone(phone) if phone else None
        if user is None or user.deactivated:
            raise RpcFailure(400, "PHONE_NOT_OCCUPIED")
        return types.contacts.ResolvedPeer(
            peer=types.PeerUser(user.id),
            chats=[],
            users=[self.user_tl(user, me=entry.user_id, phone=True)],
        )

    # -- channels / messages ------------------------------------------------------------------

    def get_channels(self, entry: AuthKeyEntry, req: Any) -> types.messages.Chats:
        return types.messages.Chats(chats=[self.channel_tl(self._input_channel(c)) for c in req.id])

    def get_full_channel(self, entry: AuthKeyEntry, req: Any) -> types.messages.ChatFull:
        ch = self._public_channel(req.channel)
        full = types.ChannelFull(
            id=ch.id,
            about=ch.about,
            read_inbox_max_id=0,
            read_outbox_max_id=0,
            unread_count=0,
            chat_photo=types.PhotoEmpty(id=0),
            notify_settings=types.PeerNotifySettings(),
            bot_info=[],
            pts=1,
            participants_count=ch.participants_count,
        )
        return types.messages.ChatFull(full_chat=full, chats=[self.channel_tl(ch)], users=[])

    def _channel_messages(
        self, entry: AuthKeyEntry, ch: Channel, found: list[Message | int], count: int
    ) -> types.messages.ChannelMessages:
        msgs = [m for m in found if isinstance(m, Message)]
        peer = types.PeerChannel(ch.id)
        tl = [
            self.message_tl(ch, m)
            if isinstance(m, Message)
            else types.MessageEmpty(id=m, peer_id=peer)
            for m in found
        ]
        return types.messages.ChannelMessages(
            pts=1,
            count=count,
            messages=tl,
            topics=[],
            chats=[self.channel_tl(ch)],
            users=self._senders(msgs, entry.user_id),
        )

    def _message_ids(self, ids: list[Any]) -> list[int]:
        out = []
        for im in ids:
            if not isinstance(im, types.InputMessageID):
                raise RpcFailure(400, "MESSAGE_IDS_EMPTY")
            out.append(im.id)
        return out

    def channel_messages(self, entry: AuthKeyEntry, req: Any) -> types.messages.ChannelMessages:
        ch = self._public_channel(req.channel)
        found: list[Message | int] = []
        for i in self._message_ids(req.id):
            m = self.world.message(ch.id, i)
            found.append(m if m is not None else i)
        return self._channel_messages(entry, ch, found, len(found))

    def get_messages(self, entry: AuthKeyEntry, req: Any) -> types.messages.Messages:
        # The world has no private chats or basic groups: every id is empty for the caller.
        ids = self._message_ids(req.id)
        return types.messages.Messages(
            messages=[types.MessageEmpty(id=i, peer_id=None) for i in ids],
            topics=[],
            chats=[],
            users=[],
        )

    def get_chats(self, entry: AuthKeyEntry, req: Any) -> types.messages.Chats:
        # The world has no basic groups: every chat id is unknown, as Telegram answers then.
        if req.id:
            raise RpcFailure(400, "CHAT_ID_INVALID")
        return types.messages.Chats(chats=[])

    def get_full_chat(self, entry: AuthKeyEntry, req: Any) -> types.messages.ChatFull:
        raise RpcFailure(400, "CHAT_ID_INVALID")  # no basic groups in the world

    def get_messages_views(self, entry: AuthKeyEntry, req: Any) -> types.messages.MessageViews:
        peer = self._input_peer(entry, req.peer)
        views = []
        for i in req.id:
            m = self.world.message(peer.id, i) if isinstance(peer, Channel) else None
            if m is None:
                views.append(types.MessageViews())
            else:
                views.append(
                    types.MessageViews(
                        views=m.views,
                        forwards=m.forwards,
                        replies=(
                            types.MessageReplies(replies=m.replies, replies_pts=0)
                            if m.replies is not None
                            else None
                        ),
                    )
                )
        chats = [self.channel_tl(peer)] if isinstance(peer, Channel) else []
        return types.messages.MessageViews(views=views, chats=chats, users=[])

    def get_history(self, entry: AuthKeyEntry, req: Any) -> Any:
        peer = self._input_peer(entry, req.peer)
        if not isinstance(peer, Channel):
            return types.messages.Messages(messages=[], topics=[], chats=[], users=[])
        msgs = sorted(peer.messages, key=lambda m: m.id, reverse=True)
        selected = msgs
        if req.offset_id:
            selected = [m for m in selected if m.id < req.offset_id]
        elif req.offset_date is not None and req.offset_date.timestamp() > 0:
            cutoff = req.offset_date.timestamp()
            selected = [m for m in selected if m.date < cutoff]
        if req.add_offset > 0:
            selected = selected[req.add_offset :]
        if req.max_id:
            selected = [m for m in selected if m.id < req.max_id]
        if req.min_id:
            selected = [m for m in selected if m.id > req.min_id]
        limit = max(0, min(req.limit or HISTORY_LIMIT_MAX, HISTORY_LIMIT_MAX))
        page: list[Message | int] = list(selected[:limit])
        return self._channel_messages(entry, peer, page, len(msgs))

    def _is_member(self, entry: AuthKeyEntry, ch: Channel) -> bool:
        me = entry.user_id
        return me is not None and (me in ch.members or (me, ch.id) in self._joined)

    def _invited_channel(self, invite_hash: str) -> Channel:
        ch = self.world.channel_by_invite(invite_hash)
        if ch is not None:
            return ch
        if self.world.channel_by_expired_invite(invite_hash) is not None:
            raise RpcFailure(400, "INVITE_HASH_EXPIRED")
        raise RpcFailure(400, "INVITE_HASH_INVALID")

    def check_chat_invite(self, entry: AuthKeyEntry, req: Any) -> Any:
        """``messages.checkChatInvite``: ``chatInviteAlready`` (the full chat) for a member,
        else ``chatInvite``, the preview Telegram shows before joining (title, about,
        participant count, flags, ``public`` when the chat also has a username). 400
        ``INVITE_HASH_EXPIRED`` for an expired hash, ``INVITE_HASH_INVALID`` for an unknown
        one (https://core.telegram.org/method/messages.checkChatInvite)."""
        ch = self._invited_channel(req.hash)
        if self._is_member(entry, ch):
            return types.ChatInviteAlready(chat=self.channel_tl(ch, member=True))
        return types.ChatInvite(
            title=ch.title,
            photo=types.PhotoEmpty(id=0),
            participants_count=ch.participants_count,
            color=0,
            channel=True,
            broadcast=not ch.megagroup or None,
            megagroup=ch.megagroup or None,
            public=ch.username is not None or None,
            verified=ch.verified or None,
            scam=ch.scam or None,
            fake=ch.fake or None,
            about=ch.about or None,
        )

    def import_chat_invite(self, entry: AuthKeyEntry, req: Any) -> Any:
        """``messages.importChatInvite``: join by invite; 400 ``USER_ALREADY_PARTICIPANT`` for
        a member, the invite errors of :meth:`check_chat_invite`. The join is kept for this
        DC's lifetime (later previews say ``chatInviteAlready``); the world is not changed."""
        me = self._me(entry)
        ch = self._invited_channel(req.hash)
        if self._is_member(entry, ch):
            raise RpcFailure(400, "USER_ALREADY_PARTICIPANT")
        self._joined.add((me.id, ch.id))
        return types.Updates(
            updates=[],
            users=[self.user_tl(me, me=me.id)],
            chats=[self.channel_tl(ch, member=True)],
            date=_date(time.time()),
            seq=0,
        )

    # -- sending ------------------------------------------------------------------------------

    def send_message(self, entry: AuthKeyEntry, req: Any) -> Any:
        """``messages.sendMessage``: to a supergroup (slow mode applies), to a user; a broadcast
        channel answers 403 ``CHAT_WRITE_FORBIDDEN`` (the world has no admins).

        The message is not added to the world (it stays immutable): later reads do not see it.
        Ids count up from the chat's highest message id.
        """
        me = self._me(entry)
        if not req.message:
            raise RpcFailure(400, "MESSAGE_EMPTY")
        peer = self._input_peer(entry, req.peer)
        if isinstance(peer, User):
            msg_id = self._next_id(-peer.id, 0)
            return types.UpdateShortSentMessage(
                id=msg_id, pts=msg_id, pts_count=1, date=_date(time.time()), out=True
            )
        if not peer.megagroup:
            raise RpcFailure(403, "CHAT_WRITE_FORBIDDEN")
        if self.limits is not None:
            refusal = self.limits.admit_send(me.id, peer.id, "messages.SendMessage")
            if refusal is not None:
                raise RpcFailure(FLOOD_CODE, refusal)
        msg_id = self._next_id(peer.id, max((m.id for m in peer.messages), default=0))
        message = types.Message(
            id=msg_id,
            peer_id=types.PeerChannel(peer.id),
            date=_date(time.time()),
            message=req.message,
            out=True,
            from_id=types.PeerUser(me.id),
        )
        return types.Updates(
            updates=[
                types.UpdateMessageID(id=msg_id, random_id=req.random_id),
                types.UpdateNewChannelMessage(message=message, pts=msg_id, pts_count=1),
            ],
            users=[self.user_tl(me, me=me.id)],
            chats=[self.channel_tl(peer)],
            date=_date(time.time()),
            seq=0,
        )

    def _next_id(self, chat_key: int, highest: int) -> int:
        sent = self._sent.get(chat_key, 0) + 1
        self._sent[chat_key] = sent
        return highest + sent
