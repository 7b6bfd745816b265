"""``[cluster] redis_url``: its rules in one place, for the config check and the Redis link
(pure: no redis, no trio-asyncio; `mtpoold._config` may import it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

__all__ = ["parse_redis_url"]


def parse_redis_url(url: str) -> tuple[dict[str, Any], str]:
    """``redis://host:port[/db]`` or ``unix:///path[?db=N]`` -> (redis-py client kwargs,
    where: ``"host:port"`` / ``"unix:/path"`` for messages). Pure (imports no redis): the
    config checks ``[cluster] redis_url`` with it too.

    Raises:
        ValueError: anything else (another scheme such as ``rediss://``, credentials, a port
            out of 0..65535, a db that is not a number), saying what is expected.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("redis url: malformed (redis://host:port[/db] or unix:///path)") from None
    if parts.password is not None or parts.username is not None:
        raise ValueError("redis url: must not carry credentials (use password_file)")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("redis url: unix:// needs a socket path (unix:///path/redis.sock)")
        db = 0
        for pair in filter(None, parts.query.split("&")):
            name, _, value = pair.partition("=")
            if name != "db" or not value.isdigit():
                raise ValueError("redis url: unix:// takes only ?db=N")
            db = int(value)
        return {"unix_socket_path": parts.path, "db": db}, f"unix:{parts.path}"
    if parts.scheme != "redis":
        raise ValueError("redis url: scheme must be redis:// or unix://")
    if not parts.hostname:
        raise ValueError("redis url: no host (redis://host:port[/db])")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError("redis url: the path is the db number (redis://host:port/0)")
    port = 6379 if port is None else port
    kwargs = {"host": parts.hostname, "port": port, "db": int(path or 0)}
    return kwargs, f"{parts.hostname}:{port}"
