"""The ``economy`` benchmark's code path on a tiny workload, so CI keeps it working.

Real Telethon against the loopback DC, both sides (``[economy]`` off and on), every phase, the
report and its RESULTS.md section; no proxies (the gated direct lane) and a few jobs. Nothing
is asserted about speed or about the savings (those are the benchmark's to report).
"""

from __future__ import annotations

from bench import economy
from bench.__main__ import SCENARIOS, markdown, splice

TINY = {
    "jobs": 16,
    "channels": 6,
    "accounts": 3,
    "messages": 4,
    "in_flight": 6,
    "proxies": 0,
    "interval_s": 0.001,
}


async def test_economy_scenario_runs_every_phase_on_both_sides() -> None:
    res = await economy.measure_async(**TINY)
    assert "economy" in SCENARIOS
    for name in ("off", "on"):
        side = res[name]
        assert side["on"] is (name == "on")
        assert set(side["phases"]) == {key for key, _, _, _ in economy.PHASES}
        for key, phase in side["phases"].items():
            done = sum(phase["served"].values()) + phase["resolve_jobs"]
            assert done + sum(phase["failed"].values()) == TINY["jobs"], (name, key)
            # every get_messages job that was answered put a GetMessages on the wire
            assert phase["by_method"].get(economy.GET_MESSAGES, 0) >= 1, (name, key)
            assert phase["requests"] == sum(phase["by_method"].values())
        # the mixed phases really mix in resolve jobs; the plain ones have none
        assert side["phases"]["pass1"]["resolve_jobs"] == 0
    report = economy.build_report(res)
    assert report.status == "ok" and report.rows
    text = markdown([report], {"date": "test"}, quick=True, total_s=1.0)
    assert "## 6. Economy" in text and "What this run shows" in text


def test_workload_is_a_deterministic_zipf_draw() -> None:
    a = economy.workload(jobs=500, channels=10, messages=5, zipf_s=1.0, resolve_share=0.1, seed=3)
    assert a == economy.workload(
        jobs=500, channels=10, messages=5, zipf_s=1.0, resolve_share=0.1, seed=3
    )
    peers = [p for _, p, _ in a]
    assert peers.count("@synth_channel_000") > peers.count("@synth_channel_009")
    assert 20 < sum(1 for k, _, _ in a if k == "resolve") < 80
    assert all(1 <= i <= 5 for _, _, i in a)


def test_splice_replaces_only_the_scenarios_run() -> None:
    from bench._common import Report

    def rep(name: str, title: str, value: str) -> Report:
        r = Report(name, title)
        r.row("metric", value)
        r.details.append(f"details of {name} {value}")
        return r

    facts = {"date": "D", "mtpoold commit": "C"}
    full = markdown(
        [rep("gate", "1. Rate gate", "1"), rep("economy", "6. Economy", "OLDVALUE")],
        facts,
        quick=False,
        total_s=60.0,
    )
    fresh = markdown([rep("economy", "6. Economy", "new")], facts, quick=False, total_s=1.0)
    text = splice(full, fresh, [rep("economy", "6. Economy", "new")], facts, quick=False)
    assert "details of gate 1" in text and "| gate | metric | 1 |" in text
    assert "details of economy new" in text and "OLDVALUE" not in text
    assert text.count("| economy | metric |") == 1
    assert "Written alone" in text and "took 1.0 min" in text  # the full run's header stays
    assert text.count("## Running the benchmark") <= 1
