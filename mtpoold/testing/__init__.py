"""Test helpers shipped with mtpoold: a loopback MTProto DC, local proxies, misbehaving relays.

Like ``trio.testing``, importable by users' tests.

The DC lives in :mod:`mtpoold.testing.dc` (``open_dc``, ``DC``, ``default_world`` ...); its main
names are re-exported here together with the proxy helpers (:func:`open_proxy`: pproxy
subprocesses), :func:`open_relay` (an in-process SOCKS5/TCP relay with fault modes) and
:func:`open_mtproxy` (an in-process loopback MTProxy with the same fault modes).
"""

from ._mtproxy import MTProxy as MTProxy
from ._mtproxy import MTProxyMode as MTProxyMode
from ._mtproxy import open_mtproxy as open_mtproxy
from ._proxies import Proxy as Proxy
from ._proxies import ProxyKind as ProxyKind
from ._proxies import ProxyStartError as ProxyStartError
from ._proxies import open_proxy as open_proxy
from ._relay import Relay as Relay
from ._relay import RelayConnection as RelayConnection
from ._relay import RelayMode as RelayMode
from ._relay import RelayProtocol as RelayProtocol
from ._relay import open_relay as open_relay
from .dc import DC as DC
from .dc import default_world as default_world
from .dc import load_world as load_world
from .dc import open_dc as open_dc
