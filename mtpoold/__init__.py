"""mtpoold: pool many Telegram user accounts through rate-gated proxies, in one Trio daemon.

The public surface is small on purpose; everything else lives in private modules::

    async with mtpoold.open_pool(mtpoold.load_config("mtpoold.toml")) as pool:
        result = await pool.invoke("contacts.ResolveUsername", {"username": "telegram"})

``mtpoold.testing`` ships a loopback MTProto DC and local proxies for tests and demos.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._compose import open_pool as open_pool
from ._config import AccountConfig as AccountConfig
from ._config import ClusterConfig as ClusterConfig
from ._config import Config as Config
from ._config import DaemonConfig as DaemonConfig
from ._config import DirectConfig as DirectConfig
from ._config import EconomyConfig as EconomyConfig
from ._config import MetricsConfig as MetricsConfig
from ._config import PolicyConfig as PolicyConfig
from ._config import ProxyConfig as ProxyConfig
from ._config import RateClassConfig as RateClassConfig
from ._config import TelegramConfig as TelegramConfig
from ._config import TelegramOverrides as TelegramOverrides
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._config import proxy_key as proxy_key
from ._errors import ConfigError as ConfigError
from ._errors import ErrorClass as ErrorClass
from ._errors import Failure as Failure
from ._errors import JobFailed as JobFailed
from ._errors import MtpooldError as MtpooldError
from ._jobs import JobPhase as JobPhase
from ._jobs import JobStatistics as JobStatistics
from ._latency import HistogramStatistics as HistogramStatistics
from ._pool import JobMeta as JobMeta
from ._pool import JobResult as JobResult
from ._pool import Pool as Pool
from ._pool import ReloadSummary as ReloadSummary
from ._stats import AccountCooldowns as AccountCooldowns
from ._stats import AccountState as AccountState
from ._stats import AccountStatistics as AccountStatistics
from ._stats import BudgetStatistics as BudgetStatistics
from ._stats import ClassState as ClassState
from ._stats import LaneStatistics as LaneStatistics
from ._stats import PoolStatistics as PoolStatistics

if _TYPE_CHECKING:
    from ._classify import classify as classify
    from ._sessionlock import SessionLocked as SessionLocked

try:
    __version__ = _version("mtpoold")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AccountConfig",
    "AccountState",
    "AccountStatistics",
    "BudgetStatistics",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "DirectConfig",
    "EconomyConfig",
    "ErrorClass",
    "Failure",
    "HistogramStatistics",
    "JobFailed",
    "JobMeta",
    "JobPhase",
    "JobResult",
    "JobStatistics",
    "LaneStatistics",
    "MetricsConfig",
    "ClusterConfig",
    "MtpooldError",
    "PolicyConfig",
    "Pool",
    "PoolStatistics",
    "AccountCooldowns",
    "ClassState",
    "RateClassConfig",
    "ProxyConfig",
    "ReloadSummary",
    "SessionLocked",
    "TelegramConfig",
    "TelegramOverrides",
    "__version__",
    "classify",
    "load_config",
    "open_pool",
    "parse_config",
    "proxy_key",
]


_LAZY = ("classify", "SessionLocked")


def __getattr__(name: str) -> _Any:
    # The Telegram side's names (classify imports Telethon; session locks belong to the
    # composition): loaded on first use, so that ``import mtpoold`` (and with it the
    # scheduling core) pulls in no Telegram-side module.
    if name == "classify":
        from ._classify import classify

        return classify
    if name == "SessionLocked":
        from ._sessionlock import SessionLocked

        return SessionLocked
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
