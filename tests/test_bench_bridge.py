"""The bridge benchmark's native baseline runs as its users run it: plain asyncio Telethon in a
process that never imports trio, trio-asyncio or mtpoold (trio-asyncio installs its own event
loop policy on import, so ``asyncio.run`` would then run on its ``SyncTrioEventLoop``)."""

from __future__ import annotations

from bench._common import run_child
from bench._dc import dc_process


def test_native_baseline_process_has_no_trio_asyncio() -> None:
    with dc_process(1) as dc:
        session = dc.session_strings(1)[0]
        common = {
            "crypto": "cryptg",
            "seconds": 0.2,
            "port": dc.port,
            "session": session,
            "pem": dc.public_key_pem,
        }
        native = run_child("bench.bridge:probe", mode="native", **common)
        bridged = run_child("bench.bridge:probe", mode="bridge", **common)
    assert native["calls"] > 0 and native["foreign_modules"] == []
    # the check sees what it is for: the bridged child has trio-asyncio loaded
    assert "trio_asyncio" in bridged["foreign_modules"] and bridged["calls"] > 0
