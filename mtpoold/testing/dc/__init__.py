"""A loopback Telegram DC for tests and demos: MTProto 2.0 over TCP for unmodified Telethon.

Start one with ``async with open_dc() as dc:`` (or ``await nursery.start(DC(...).serve)``), point a
Telethon client at it with ``telethon.crypto.rsa.add_key(dc.public_key_pem, old=False)`` and
``StringSession(dc.session_string(phone))``, and script failures with ``dc.faults.add(...)``.
Telegram's limits — per-account, per-method budgets and floods (``FLOOD_WAIT_X`` for that
method only) and slow mode (``SLOWMODE_WAIT_X``) — come from the world (``[[limits]]``,
``[[floods]]``, ``slowmode_s``) or ``dc.limits``; ``dc.counters(user)`` counts every request
per method (see ``_limits``).
Besides ``dc.faults``, DC-wide knobs: ``dc.set_latency(ms)``, ``dc.set_drop_rate(p)``,
``dc.blackhole_all()``, ``dc.refuse_connections()``, ``dc.revoke(user)`` (401
``AUTH_KEY_UNREGISTERED``). ``ping_delay_disconnect`` closes a connection as Telegram does
(``disconnect_delay`` s after the last one); ``dc.connection_log`` records every connection's
open/close interval and the auth keys used on it, ``dc.auth_key_overlaps()`` lists any two
that used one key at the same time. It answers ``contacts.resolvePhone`` and invite previews
(``messages.checkChatInvite`` / ``importChatInvite``) from the world's phones, invite hashes,
expired invites and members.

Run ``python -m mtpoold.testing.dc --help`` for a standalone server: the faults on its command
line (``--flood METHOD=SECONDS[:ACCOUNT]``, ``--drop P``, ``--delay-ms MS``, ``--blackhole``,
``--revoke ACCOUNT``, …) and at run time on ``--control -`` (stdin) or ``--control PATH`` (a
unix socket), one command a line answered ``ok …`` / ``error …`` (:class:`DCShell`, whose
module ``_shell`` documents the language: ``flood``, ``unflood``, ``drop``, ``delay``,
``blackhole on|off``, ``revoke``, ``counters``, ``help``, …).
"""

from ._faults import UNPARSEABLE_CONSTRUCTOR_ID as UNPARSEABLE_CONSTRUCTOR_ID
from ._faults import BlackholeAction as BlackholeAction
from ._faults import CorruptReplyAction as CorruptReplyAction
from ._faults import DelayAction as DelayAction
from ._faults import DropAction as DropAction
from ._faults import FaultAction as FaultAction
from ._faults import FaultRule as FaultRule
from ._faults import Faults as Faults
from ._faults import RpcErrorAction as RpcErrorAction
from ._faults import SaltStormAction as SaltStormAction
from ._faults import UnparseableReplyAction as UnparseableReplyAction
from ._faults import WrongSessionAction as WrongSessionAction
from ._faults import blackhole as blackhole
from ._faults import corrupt_reply as corrupt_reply
from ._faults import delay as delay
from ._faults import drop as drop
from ._faults import rpc_error as rpc_error
from ._faults import salt_storm as salt_storm
from ._faults import unparseable_reply as unparseable_reply
from ._faults import wrong_session as wrong_session
from ._handlers import LOGIN_CODE as LOGIN_CODE
from ._limits import Flood as Flood
from ._limits import Limit as Limit
from ._limits import Limits as Limits
from ._limits import method_spelling as method_spelling
from ._server import DC as DC
from ._server import DEFAULT_DC_ID as DEFAULT_DC_ID
from ._server import DEFAULT_SEED as DEFAULT_SEED
from ._server import AuthKeyOverlap as AuthKeyOverlap
from ._server import CallRecord as CallRecord
from ._server import ConnectionRecord as ConnectionRecord
from ._server import DCStatistics as DCStatistics
from ._server import WireMessage as WireMessage
from ._server import WireMessages as WireMessages
from ._server import open_dc as open_dc
from ._shell import DCShell as DCShell
from ._telethon import fresh_session as fresh_session
from ._telethon import install_public_key as install_public_key
from ._telethon import open_telethon_client as open_telethon_client
from ._world import Channel as Channel
from ._world import Message as Message
from ._world import User as User
from ._world import World as World
from ._world import default_world as default_world
from ._world import load_world as load_world
from ._world import synthetic_channel_username as synthetic_channel_username
from ._world import synthetic_world as synthetic_world
from ._world import world_from_dict as world_from_dict
