"""The message id a message link names: ``https://t.me/chan/123`` -> 123.

`mtpoold._links.parse_link` reads the *peer* of a link and ignores its message id; a
``get_messages`` job given a message link and no ``ids`` fetches the message the link names
(`message_id_of_link`). Plain Python: no Telethon, no network.

Forms (as Telegram writes them; ``telegram.me`` / ``telegram.dog`` and ``www.`` too)::

    t.me/<username>/<id>               https://t.me/durov/123
    t.me/s/<username>/<id>             the channel preview
    t.me/<username>/<thread>/<id>      a message in a forum topic (the last number)
    t.me/c/<channel>/<id>              a private channel or supergroup
    t.me/c/<channel>/<thread>/<id>
    tg://resolve?domain=<username>&post=<id>
    tg://privatepost?channel=<channel>&post=<id>

Query parameters of ``https`` links (``?single``, ``?comment=…``, ``?thread=…``) do not
change which message the link names.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from ._links import MAX_MESSAGE_ID

__all__ = ["message_id_of_link"]

_HOSTS: Final = frozenset({"t.me", "telegram.me", "telegram.dog"})


def message_id_of_link(peer: str | int) -> int | None:
    """The message id ``peer`` names if it is a message link, else None.

    A peer that is no link, or a link without a message id, gives None (the pool then says
    ``ids`` are required).

    Raises:
        ValueError: ``peer`` is a message link whose message id is outside
            1..`MAX_MESSAGE_ID` (message ids are TL ``int``, int32), with a one-line reason
            that names the id (at most 20 digits of it).
    """
    if not isinstance(peer, str):
        return None
    text = peer.strip()
    if len(text) > 512:
        return None
    try:
        if text.lower().startswith("tg://"):
            digits = _from_tg_url(text)
        else:
            digits = _from_https_url(text)
    except ValueError:  # urlsplit: not a URL at all
        return None
    if digits is None:
        return None
    value = int(digits)
    if not 1 <= value <= MAX_MESSAGE_ID:
        shown = digits if len(digits) <= 20 else digits[:20] + "…"
        raise ValueError(
            f"the message link's message id {shown} is out of range"
            f" (message ids are 1..{MAX_MESSAGE_ID})"
        )
    return value


def _from_https_url(text: str) -> str | None:
    if "://" not in text:
        text = "https://" + text
    url = urllib.parse.urlsplit(text)
    host = (url.hostname or "").lower().removeprefix("www.")
    if url.scheme.lower() not in ("http", "https") or host not in _HOSTS:
        return None
    parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
    if parts and parts[0].lower() in ("c", "s"):
        parts = parts[1:]  # t.me/c/<channel>/…, t.me/s/<username>/…
    # <peer>/<id> or <peer>/<thread>/<id>
    if len(parts) not in (2, 3) or not all(_digits(p) for p in parts[1:]):
        return None
    return parts[-1]


def _from_tg_url(text: str) -> str | None:
    url = urllib.parse.urlsplit(text)
    action = (url.netloc or url.path.strip("/")).lower()
    if action not in ("resolve", "privatepost"):
        return None
    post = urllib.parse.parse_qs(url.query).get("post")
    return post[0] if post and _digits(post[0]) else None


def _digits(text: str) -> bool:
    """A decimal number as a link writes one (any size: the range is checked after)."""
    return text != "" and text.isascii() and text.isdigit()
