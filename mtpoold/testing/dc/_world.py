"""The fixture world a loopback DC serves: users, channels, supergroups and their messages.

Built in code from the attrs classes below, or loaded from TOML with :func:`load_world`
(see ``examples/world.toml``). Ids and access hashes are global, not per viewer as on Telegram.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Final

import attrs
import cattrs
from cattrs.preconf.tomllib import make_converter

from ._limits import Flood, Limit

USERNAME_RE: Final = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{3,31}$")
DEFAULT_DATE: Final = 1_700_000_000  # unix seconds, 2023-11-14


def _check_username(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not USERNAME_RE.match(value):
        raise ValueError(f"'{attribute.name}' is not a valid username: {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0:
        raise ValueError(f"'{attribute.name}' must be > 0: {value}")


@attrs.frozen(kw_only=True)
class User:
    """A user account (or bot) of the world.

    Attributes:
        id: user id (> 0).
        access_hash: the hash clients must present in ``InputUser``/``InputPeerUser``.
        first_name, last_name, username, phone: profile; ``phone`` (digits only) is the login.
        bot, verified, scam, fake: the Telegram flags of the same names.
        deactivated: a deleted/deactivated account: shown as ``deleted``, its sessions get
            401 ``USER_DEACTIVATED``, it cannot log in and its username does not resolve.
        password: 2FA password (SRP) asked after the login code, ``None`` for none.
        about: the bio returned by ``users.getFullUser``.
    """

    id: int = attrs.field(validator=_positive)
    access_hash: int
    first_name: str = ""
    last_name: str | None = None
    username: str | None = attrs.field(default=None, validator=_check_username)
    phone: str | None = None
    bot: bool = False
    verified: bool = False
    scam: bool = False
    fake: bool = False
    deactivated: bool = False
    password: str | None = None
    about: str = ""


@attrs.frozen(kw_only=True)
class Message:
    """A message of a channel or supergroup.

    Attributes:
        id: message id inside its channel (> 0).
        date: unix time in seconds.
        text: message text.
        views, forwards, replies: counters (``None``: not shown, as Telegram omits them).
        reactions: emoji -> count.
        from_id: author user id (supergroups); ``None`` for channel posts.
    """

    id: int = attrs.field(validator=_positive)
    date: int = DEFAULT_DATE
    text: str = ""
    views: int | None = None
    forwards: int | None = None
    replies: int | None = None
    reactions: dict[str, int] = attrs.field(factory=dict)
    from_id: int | None = None


@attrs.frozen(kw_only=True)
class Channel:
    """A broadcast channel (``megagroup=False``) or a supergroup (``megagroup=True``).

    Attributes:
        id: channel id (> 0, without the -100 prefix).
        access_hash: hash required in ``InputChannel``/``InputPeerChannel``.
        title, username, about: public profile; private channels should have no username.
        megagroup: supergroup rather than broadcast channel.
        participants_count: members shown in ``channels.getFullChannel`` and ``Channel``.
        verified, scam, fake: the Telegram flags.
        private: the viewer has no access: ``channelForbidden`` in ``channels.getChannels``,
            400 ``CHANNEL_PRIVATE`` everywhere else (username, invite, history, full info).
        invite_hash: the ``t.me/+HASH`` part of its invite link, if any:
            ``messages.checkChatInvite`` answers ``chatInvite`` (a preview: title, counts,
            flags) to a user who is not a member, ``chatInviteAlready`` to a member.
        expired_invites: hashes of its invite links that have expired or were revoked:
            ``messages.checkChatInvite`` / ``importChatInvite`` answer 400
            ``INVITE_HASH_EXPIRED``.
        members: user ids that have joined it (``chatInviteAlready`` for them; the world does
            not otherwise model membership).
        date: creation time, unix seconds.
        messages: its messages, any order.
        slowmode_s: slow mode of a supergroup, seconds (0: off): a user may send one message
            per this many seconds, an earlier send gets ``420 SLOWMODE_WAIT_X``
            (``mtpoold.testing.dc._limits``).
    """

    id: int = attrs.field(validator=_positive)
    access_hash: int
    title: str
    username: str | None = attrs.field(default=None, validator=_check_username)
    about: str = ""
    megagroup: bool = False
    participants_count: int = 0
    verified: bool = False
    scam: bool = False
    fake: bool = False
    private: bool = False
    invite_hash: str | None = None
    expired_invites: tuple[str, ...] = ()
    members: tuple[int, ...] = ()
    date: int = DEFAULT_DATE
    messages: tuple[Message, ...] = ()
    slowmode_s: int = attrs.field(default=0, validator=attrs.validators.ge(0))


def _unique(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        if v is None:
            continue
        if v in seen:
            raise ValueError(f"duplicate {what}: {v!r}")
        seen.add(v)


@attrs.frozen(kw_only=True)
class World:
    """Everything the DC knows. Immutable; lookups are indexed at construction.

    Attributes:
        users, channels: the accounts and chats.
        limits: per-account, per-method request budgets (:class:`Limit`, ``[[limits]]``).
        floods: accounts flooded on a method from the DC's start (:class:`Flood`,
            ``[[floods]]``).

    Raises:
        ValueError: on duplicate user ids, phones, channel ids, usernames, invite hashes or
            message ids, a channel member that is not a user, or a limit or flood naming a
            user that is not in the world.
    """

    users: tuple[User, ...] = ()
    channels: tuple[Channel, ...] = ()
    limits: tuple[Limit, ...] = ()
    floods: tuple[Flood, ...] = ()
    _users_by_id: dict[int, User] = attrs.field(init=False, eq=False, repr=False)
    _users_by_phone: dict[str, User] = attrs.field(init=False, eq=False, repr=False)
    _channels_by_id: dict[int, Channel] = attrs.field(init=False, eq=False, repr=False)
    _by_username: dict[str, User | Channel] = attrs.field(init=False, eq=False, repr=False)
    _invites: dict[str, Channel] = attrs.field(init=False, eq=False, repr=False)
    _expired_invites: dict[str, Channel] = attrs.field(init=False, eq=False, repr=False)
    _messages: dict[int, dict[int, Message]] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _unique([u.id for u in self.users], "user id")
        _unique([u.phone for u in self.users], "phone")
        _unique([c.id for c in self.channels], "channel id")
        names = [u.username for u in self.users] + [c.username for c in self.channels]
        _unique([n.lower() for n in names if n], "username")
        _unique(
            [c.invite_hash for c in self.channels]
            + [h for c in self.channels for h in c.expired_invites],
            "invite hash",
        )
        for c in self.channels:
            _unique([m.id for m in c.messages], f"message id in channel {c.id}")
        setattr_ = object.__setattr__
        setattr_(self, "_users_by_id", {u.id: u for u in self.users})
        setattr_(self, "_users_by_phone", {u.phone: u for u in self.users if u.phone})
        setattr_(self, "_channels_by_id", {c.id: c for c in self.channels})
        by_name: dict[str, User | Channel] = {}
        for u in self.users:
            if u.username:
                by_name[u.username.lower()] = u
        for c in self.channels:
            if c.username:
                by_name[c.username.lower()] = c
        setattr_(self, "_by_username", by_name)
        setattr_(self, "_invites", {c.invite_hash: c for c in self.channels if c.invite_hash})
        setattr_(self, "_expired_invites", {h: c for c in self.channels for h in c.expired_invites})
        for c in self.channels:
            for member in c.members:
                if member not in self._users_by_id:
                    raise ValueError(f"channel {c.id}: member {member} is not a user of the world")
        setattr_(self, "_messages", {c.id: {m.id: m for m in c.messages} for c in self.channels})
        for i, limit in enumerate(self.limits):
            if limit.user is not None and not self._has_user(limit.user):
                raise ValueError(f"limits[{i}]: no user {limit.user!r} in the world")
        for i, flood in enumerate(self.floods):
            if not self._has_user(flood.user):
                raise ValueError(f"floods[{i}]: no user {flood.user!r} in the world")

    def _has_user(self, key: int | str) -> bool:
        try:
            self.user(key)
        except KeyError:
            return False
        return True

    def user(self, key: int | str) -> User:
        """The user with this id (int) or phone (str, leading ``+`` ignored).

        Raises:
            KeyError: if there is none.
        """
        if isinstance(key, int):
            return self._users_by_id[key]
        return self._users_by_phone[key.lstrip("+")]

    def user_by_id(self, user_id: int) -> User | None:
        """The user with ``user_id``, or ``None``."""
        return self._users_by_id.get(user_id)

    def user_by_phone(self, phone: str) -> User | None:
        """The user with ``phone`` (leading ``+`` ignored), or ``None``."""
        return self._users_by_phone.get(phone.lstrip("+"))

    def channel_by_id(self, channel_id: int) -> Channel | None:
        """The channel with ``channel_id``, or ``None``."""
        return self._channels_by_id.get(channel_id)

    def by_username(self, username: str) -> User | Channel | None:
        """The user or channel with ``username`` (case-insensitive, ``@`` stripped), or ``None``."""
        return self._by_username.get(username.lstrip("@").lower())

    def channel_by_invite(self, invite_hash: str) -> Channel | None:
        """The channel whose (live) invite link hash is ``invite_hash``, or ``None``."""
        return self._invites.get(invite_hash)

    def channel_by_expired_invite(self, invite_hash: str) -> Channel | None:
        """The channel one of whose expired invite hashes is ``invite_hash``, or ``None``."""
        return self._expired_invites.get(invite_hash)

    def message(self, channel_id: int, message_id: int) -> Message | None:
        """Message ``message_id`` of channel ``channel_id``, or ``None``."""
        return self._messages.get(channel_id, {}).get(message_id)


_converter = make_converter(forbid_extra_keys=True)


def _format_error(exc: BaseException, _type: Any) -> str:
    # Keep the validators' own messages (cattrs' default formatter drops them).
    if isinstance(exc, ValueError | TypeError) and str(exc):
        return f"invalid value ({exc})"
    return cattrs.v.format_exception(exc, _type)


def world_from_dict(data: Mapping[str, Any]) -> World:
    """Build a :class:`World` from plain data (the TOML document's shape).

    Raises:
        ValueError: listing every problem, one per line, ``"reason @ $.path"``.
    """
    try:
        return _converter.structure(dict(data), World)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            lines = cattrs.transform_error(exc, format_exception=_format_error)
        else:
            lines = [str(exc)]
        raise ValueError("invalid world:\n" + "\n".join(lines)) from None


def load_world(path: str | os.PathLike[str]) -> World:
    """Load a world from a TOML file (``[[users]]`` and ``[[channels]]`` tables).

    Raises:
        OSError: if the file cannot be read.
        ValueError: if it is not valid TOML or does not describe a valid world.
    """
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{os.fspath(path)}: {exc}") from None
    return world_from_dict(data)


def default_world() -> World:
    """A small world for tests and demos.

    Users (phone: who): ``15550000001`` alice (@alice_test), ``15550000002`` bob (@bob_test,
    verified), ``15550000003`` carol (no username), ``15550000004`` dave (2FA password
    ``"hunter2"``, @dave_2fa), ``15550000005`` erin (deactivated), ``15550000006`` a bot
    (@mtpoold_test_bot). Channels: @mtpoold_news (broadcast, 5 posts with views/reactions),
    @mtpoold_chat (supergroup, alice a member, invite hash ``ChatInvite456``), a private
    channel "Secret Club" (invite hash ``PrivInvite123``, expired hash ``OldInvite789``, bob a
    member) and @mtpoold_scam (scam-flagged broadcast).
    """
    users = (
        User(
            id=1001,
            access_hash=0x1001AA,
            first_name="Alice",
            last_name="Test",
            username="alice_test",
            phone="15550000001",
        ),
        User(
            id=1002,
            access_hash=0x1002BB,
            first_name="Bob",
            username="bob_test",
            phone="15550000002",
            verified=True,
        ),
        User(id=1003, access_hash=0x1003CC, first_name="Carol", phone="15550000003"),
        User(
            id=1004,
            access_hash=0x1004DD,
            first_name="Dave",
            username="dave_2fa",
            phone="15550000004",
            password="hunter2",
        ),
        User(
            id=1005, access_hash=0x1005EE, first_name="Erin", phone="15550000005", deactivated=True
        ),
        User(
            id=1006,
            access_hash=0x1006FF,
            first_name="Test Bot",
            username="mtpoold_test_bot",
            phone="15550000006",
            bot=True,
        ),
    )
    news = tuple(
        Message(
            id=i,
            date=DEFAULT_DATE + 3600 * i,
            text=f"News post #{i}",
            views=1000 * i,
            forwards=10 * i,
            replies=i,
            reactions={"👍": 5 * i, "🔥": i},
        )
        for i in range(1, 6)
    )
    chat = tuple(
        Message(
            id=i,
            date=DEFAULT_DATE + 60 * i,
            text=f"Chat message #{i}",
            from_id=1001 if i % 2 else 1002,
        )
        for i in range(1, 4)
    )
    channels = (
        Channel(
            id=2001,
            access_hash=0x2001AA,
            title="mtpoold News",
            username="mtpoold_news",
            about="Test channel",
            participants_count=12345,
            verified=True,
            messages=news,
        ),
        Channel(
            id=2002,
            access_hash=0x2002BB,
            title="mtpoold Chat",
            username="mtpoold_chat",
            megagroup=True,
            participants_count=321,
            invite_hash="ChatInvite456",
            members=(1001,),
            messages=chat,
        ),
        Channel(
            id=2003,
            access_hash=0x2003CC,
            title="Secret Club",
            private=True,
            invite_hash="PrivInvite123",
            expired_invites=("OldInvite789",),
            members=(1002,),
            about="Members only",
            participants_count=7,
            messages=(Message(id=1, text="hidden"),),
        ),
        Channel(
            id=2004,
            access_hash=0x2004DD,
            title="Totally Legit",
            username="mtpoold_scam",
            scam=True,
            participants_count=99,
            messages=(Message(id=1, text="trust me", views=3),),
        ),
    )
    return World(users=users, channels=channels)


#: First user id, first channel id and phone prefix of :func:`synthetic_world`.
SYNTHETIC_FIRST_USER_ID: Final = 300_001
SYNTHETIC_FIRST_CHANNEL_ID: Final = 400_001
SYNTHETIC_PHONE_PREFIX: Final = "1777"


def synthetic_channel_username(index: int) -> str:
    """The username of channel ``index`` (0-based) of :func:`synthetic_world`, e.g.
    ``"synth_channel_007"``."""
    return f"synth_channel_{index:03d}"


def synthetic_world(*, users: int = 10, channels: int = 100, messages: int = 20) -> World:
    """A generated world for benchmarks and load tests: ``users`` plain accounts and
    ``channels`` public broadcast channels of ``messages`` posts each.

    User ``i`` (0-based): id ``SYNTHETIC_FIRST_USER_ID + i``, phone ``"1777"`` + ``i`` on 7
    digits, no username. Channel ``j``: id ``SYNTHETIC_FIRST_CHANNEL_ID + j``, username
    :func:`synthetic_channel_username` ``(j)``, posts with ids ``1..messages`` (views,
    forwards, a reaction). Deterministic: the same arguments give the same world, so session
    strings (``DC.session_string``) stay valid across DC restarts on the same port.

    Raises:
        ValueError: if a count is negative or ``channels`` > 1000 (usernames have 3 digits).
    """
    if users < 0 or channels < 0 or messages < 0:
        raise ValueError("counts must be >= 0")
    if channels > 1000:
        raise ValueError(f"at most 1000 channels: {channels}")
    people = tuple(
        User(
            id=SYNTHETIC_FIRST_USER_ID + i,
            access_hash=0x5EED_0000 + i,
            first_name=f"Synth {i}",
            phone=f"{SYNTHETIC_PHONE_PREFIX}{i:07d}",
        )
        for i in range(users)
    )
    chats = tuple(
        Channel(
            id=SYNTHETIC_FIRST_CHANNEL_ID + j,
            access_hash=0x7A11_0000 + j,
            title=f"Synthetic channel {j}",
            username=synthetic_channel_username(j),
            participants_count=100 + j,
            messages=tuple(
                Message(
                    id=k,
                    date=DEFAULT_DATE + 600 * k,
                    text=f"post {k}",
                    views=10 * k,
                    forwards=k % 5,
                    reactions={"👍": k % 7},
                )
                for k in range(1, messages + 1)
            ),
        )
        for j in range(channels)
    )
    return World(users=people, channels=chats)
