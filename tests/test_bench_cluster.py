"""The ``cluster`` benchmark's code path on a tiny workload, so CI keeps it working.

Real node processes (SharedGate, LeaseBook, NodeRegistry on one redis-server) and real PHP
worker processes, one proxy, a second per phase; the report and its RESULTS.md section.
Nothing is asserted about speed, utilization or fairness (those are the benchmark's to report).
"""

from __future__ import annotations

from bench import cluster
from bench.__main__ import SCENARIOS, markdown
from bench._common import render_analysis


def test_cluster_scenario_runs_both_phases_and_reports() -> None:
    res = cluster.measure(proxies=1, workers=2, duration_s=2.0, nodes=2)
    assert "cluster" in SCENARIOS
    assert len(res["php"]["workers"]) == 2  # (under load they may start after the phase)
    started = [s for w in res["cluster"]["workers"] for _, s in w["jobs"] if s is not None]
    assert started
    assert res["cluster"]["round_trips"] >= len(started)  # at least one per job
    assert {n["node"] for n in res["cluster"]["nodes"]} == {"node0", "node1"}
    report = cluster.build_report(res)
    assert report.status == "ok" and report.rows
    assert "n/a (" not in render_analysis(cluster.ANALYSIS, report.values)
    text = markdown([report], {"date": "now"}, quick=True, total_s=1.0)
    assert f"## {cluster.TITLE}" in text
