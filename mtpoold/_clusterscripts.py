"""The Lua scripts of the cluster: gate reservation, leases. Run by `RedisLink.run_script`.

Every time inside a script comes from ``redis.call('TIME')`` (Redis's own clock), in ms, so
nodes' clocks never have to agree. Key layout: docs/ARCHITECTURE.md and issue 15's design.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SCRIPTS"]

#: Lua source by name (filled in by the implementation).
SCRIPTS: Final[dict[str, str]] = {}
