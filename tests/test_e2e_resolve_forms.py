"""End to end: `resolve` of phone numbers and invite links, through the pool, real Telethon
and the loopback DC — which calls go out (counted at the DC), what comes back, and that a
phone number appears in no log line, error or status."""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from mtpoold._config import EconomyConfig
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold.testing import DC, open_dc

from _e2e import fleet_config, fleet_world, open_fleet

ALICE = "15550000001"
BOB_PHONE = "15550000002"
UNKNOWN_PHONE = "15559876543"


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


def _delta(dc: DC, before: collections.Counter[str]) -> dict[str, int]:
    after = dc.counters(ALICE)
    after.subtract(before)
    families = ("contacts", "messages", "users", "channels")
    return {k: v for k, v in after.items() if v and k.split(".")[0] in families}


async def test_resolve_phone_numbers_and_invite_links_end_to_end(
    tmp_path: Path, dc: DC, caplog: pytest.LogCaptureFixture
) -> None:
    config = fleet_config(tmp_path, dc, proxies=[], accounts={"acc-1": (ALICE, None)})
    config = attrs.evolve(config, economy=EconomyConfig(peer_memory=True))
    caplog.set_level(logging.DEBUG)
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        before = dc.counters(ALICE)
        # a phone number, as Telethon reads it: "+…" and a bare digit string alike
        for spelling in ("+" + BOB_PHONE, BOB_PHONE, "+1 (555) 000-0002"):
            bob = await pool.resolve(spelling)
            assert (bob.value["id"], bob.value["username"]) == (1002, "bob_test")
        # every time on the wire: phone look-ups are not remembered (no key for a phone)
        # (the account's own users.getUsers(self) at its first connect may fall in here)
        delta = _delta(dc, before)
        delta.pop("users.GetUsers", None)
        assert delta == {"contacts.ResolvePhone": 3, "users.GetFullUser": 3}

        # invite links: a preview for a chat the account has not joined, the chat for one
        # it is in
        before = dc.counters(ALICE)
        preview = await pool.resolve("t.me/+PrivInvite123")
        assert preview.value["title"] == "Secret Club"
        assert preview.value["participants_count"] == 7
        member = await pool.resolve("https://t.me/joinchat/ChatInvite456")
        assert (member.value["id"], member.value["username"]) == (2002, "mtpoold_chat")
        assert _delta(dc, before) == {
            "messages.CheckChatInvite": 2,
            "channels.GetFullChannel": 1,
        }

        # what Telegram refuses is the caller's: PEER_NOT_FOUND, and no phone in the text
        failures = {}
        for peer in ("+" + UNKNOWN_PHONE, "t.me/+OldInvite789", "t.me/+NoSuchInvite1"):
            with pytest.raises(JobFailed) as info:
                await pool.resolve(peer)
            failures[peer] = info.value
        assert {p: f.error_class for p, f in failures.items()} == dict.fromkeys(
            failures, ErrorClass.PEER_NOT_FOUND
        )
        assert "PHONE_NOT_OCCUPIED (400)" in str(failures["+" + UNKNOWN_PHONE])
        assert "INVITE_HASH_EXPIRED (400)" in str(failures["t.me/+OldInvite789"])
        assert "INVITE_HASH_INVALID (400)" in str(failures["t.me/+NoSuchInvite1"])
        # a phone number names a peer for get_messages too (contacts.resolvePhone, not
        # Telethon's contacts.getContacts scan)
        got = await pool.get_messages("+" + BOB_PHONE, [1])
        assert got.value == {"1": {"exists": False}}
        assert "contacts.GetContacts" not in _delta(dc, before)
        status = json.dumps(attrs.asdict(pool.statistics()), default=str)
    text = caplog.text + status + " ".join(str(f) for f in failures.values())
    for digits in (BOB_PHONE, UNKNOWN_PHONE, "5550000002", "(555) 000-0002"):
        assert digits not in text
