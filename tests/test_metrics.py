"""The Prometheus collector on made-up statistics, the latency histogram, the trio endpoint,
the ``[metrics]`` config section and the example Grafana dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mtpoold._config import MetricsConfig, parse_config
from mtpoold._errors import ConfigError
from mtpoold._latency import LATENCY_BUCKETS_S, Histogram, HistogramStatistics
from mtpoold._metrics import (
    MAX_REQUEST_BYTES,
    PoolCollector,
    http_answer,
    metrics_registry,
    serve_metrics,
)
from mtpoold._stats import (
    AccountState,
    AccountStatistics,
    BudgetStatistics,
    ClassState,
    LaneStatistics,
    PoolStatistics,
)

DASHBOARD = Path(__file__).resolve().parent.parent / "examples" / "grafana-dashboard.json"
EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "mtpoold.toml"


# --- made-up statistics ---------------------------------------------------------------------------


def _hist(*values_s: float) -> HistogramStatistics:
    h = Histogram()
    for v in values_s:
        h.observe(v)
    return h.statistics()


def _lane(name: str, **kw: Any) -> LaneStatistics:
    fields: dict[str, Any] = dict(
        key=name, name=name, type="socks5", capacity=2, in_flight=1, waiting=3,
        next_slot_in_s=0.5, interval_s=2.0, calls=7, errors_by_class={},
        cooldown_remaining_s=0.0, consecutive_failures=0,
    )  # fmt: skip
    fields.update(kw)
    return LaneStatistics(**fields)


def _account(account_id: str, state: AccountState, **kw: Any) -> AccountStatistics:
    fields: dict[str, Any] = dict(
        id=account_id, proxy_key="de-1", proxy_name="de-1", state=state, connected=False,
        cooldown_remaining_s=0.0, disabled_reason=None, calls_ok=0, calls_failed=0,
        errors_by_class={}, last_error_class=None, last_error_message=None,
        last_used_s_ago=None, tags=(),
    )  # fmt: skip
    fields.update(kw)
    return AccountStatistics(**fields)


def _flood(rate_class: str, left_s: float) -> ClassState:
    return ClassState(
        rate_class=rate_class,
        cooldown_remaining_s=left_s,
        cause="FLOOD_WAIT: A wait of 300 seconds is required",
        budget_left={},
        budget_frees_in_s=0.0,
    )


def fake_statistics() -> PoolStatistics:
    accounts = (
        _account("a1", AccountState.READY, connected=True, calls_ok=5, calls_failed=1,
                 rate_classes=(_flood("resolve", 250.0), _flood("read", 0.0))),
        _account("a2", AccountState.BUSY, connected=True, calls_ok=2,
                 rate_classes=(_flood("resolve", 40.0),)),
        _account("a3", AccountState.COOLDOWN, cooldown_remaining_s=60.0),
        _account("a4", AccountState.DISABLED, disabled_reason="SESSION_REVOKED: gone"),
    )  # fmt: skip
    return PoolStatistics(
        uptime_s=12.5,
        jobs_in_flight=2,
        jobs_ok=6,
        jobs_failed=3,
        accounts_total=4,
        accounts_ready=1,
        accounts_cooling=1,
        accounts_disabled=1,
        config_generation=3,
        config_loaded_at="2026-01-02T03:04:05Z",
        orphaned_accounts=("gone-1",),
        proxies=(
            _lane(
                "de-1",
                errors_by_class={"PROXY_UNAVAILABLE": 2, "FLOOD_WAIT": 1},
                cooldown_remaining_s=30.0,
                consecutive_failures=2,
                gate_wait=_hist(0.001, 0.3, 0.3, 700.0),
                call_latency=_hist(0.02),
            ),
            _lane("no_proxy", type="direct", capacity=1),
        ),  # fmt: skip
        accounts=accounts,
        jobs_by_class={
            "other": {"OK": 4, "PROXY_UNAVAILABLE": 1},
            "resolve": {"OK": 2, "FLOOD_WAIT": 1, "CANCELLED": 1},
        },
        budgets=(
            BudgetStatistics(
                rate_class="resolve",
                window="per_hour",
                window_s=3600.0,
                spent=30,
                limit=100,
                exhausted=1,
            ),
            BudgetStatistics(
                rate_class="resolve",
                window="per_day",
                window_s=86400.0,
                spent=30,
                limit=400,
                exhausted=0,
            ),
        ),  # fmt: skip
    )


@attrs.frozen
class FakeServer:
    connections: int = 2
    in_flight: int = 1
    requests: int = 41
    rejected_handshakes: int = 3
    draining: bool = False


BUILD = {"version": "1.2.3", "python": "3.11.0", "telethon": "1.45.0"}


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(collector: PoolCollector) -> Samples:
    """The exposition text parsed back: sample name -> sorted labels -> value."""
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode("utf-8")
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def _collector(**kw: Any) -> PoolCollector:
    return PoolCollector(fake_statistics, FakeServer, build=BUILD, **kw)


# --- the collector --------------------------------------------------------------------------------


def test_collector_families_and_values_from_statistics() -> None:
    s = scrape(_collector())
    assert one(s, "mtpoold_build_info", **BUILD) == 1
    assert one(s, "mtpoold_uptime_seconds") == 12.5
    assert one(s, "mtpoold_config_generation") == 3
    assert one(s, "mtpoold_config_loaded_timestamp_seconds") == 1767323045.0
    assert one(s, "mtpoold_jobs_in_flight") == 2
    assert s["mtpoold_jobs_total"] == {
        (("outcome", "OK"), ("rate_class", "other")): 4,
        (("outcome", "PROXY_UNAVAILABLE"), ("rate_class", "other")): 1,
        (("outcome", "CANCELLED"), ("rate_class", "resolve")): 1,
        (("outcome", "FLOOD_WAIT"), ("rate_class", "resolve")): 1,
        (("outcome", "OK"), ("rate_class", "resolve")): 2,
    }
    # every state, the empty ones as 0, so a dashboard's series never vanish
    assert {dict(k)["state"]: v for k, v in s["mtpoold_accounts"].items()} == {
        "idle": 0, "connecting": 0, "ready": 1, "busy": 1, "cooldown": 1, "disabled": 1,
        "retired": 0, "remote": 0,
    }  # fmt: skip
    assert one(s, "mtpoold_accounts_connected") == 2
    assert one(s, "mtpoold_accounts_cooling") == 1
    assert one(s, "mtpoold_account_cooldown_seconds_max") == 60
    assert one(s, "mtpoold_class_cooldowns", rate_class="resolve") == 2
    assert one(s, "mtpoold_class_cooldowns", rate_class="read") == 0
    assert one(s, "mtpoold_class_cooldown_seconds_max", rate_class="resolve") == 250
    assert one(s, "mtpoold_orphaned_accounts") == 1


def test_collector_lanes_and_histograms() -> None:
    s = scrape(_collector())
    assert one(s, "mtpoold_lane_capacity", proxy="de-1", type="socks5") == 2
    assert one(s, "mtpoold_lane_capacity", proxy="no_proxy", type="direct") == 1
    assert one(s, "mtpoold_lane_interval_seconds", proxy="de-1") == 2.0
    assert one(s, "mtpoold_lane_in_flight", proxy="de-1") == 1
    assert one(s, "mtpoold_lane_waiting", proxy="de-1") == 3
    assert one(s, "mtpoold_lane_cooldown_seconds", proxy="de-1") == 30
    assert one(s, "mtpoold_lane_consecutive_failures", proxy="de-1") == 2
    assert one(s, "mtpoold_lane_calls_total", proxy="de-1") == 7
    assert one(s, "mtpoold_lane_errors_total", proxy="de-1", error_class="PROXY_UNAVAILABLE") == 2
    assert one(s, "mtpoold_lane_errors_total", proxy="de-1", error_class="FLOOD_WAIT") == 1
    # cumulative `le` buckets: 0.001 <= 0.005; 0.3 twice <= 0.5; 700 s only in +Inf
    assert one(s, "mtpoold_gate_wait_seconds_bucket", proxy="de-1", le="0.005") == 1
    assert one(s, "mtpoold_gate_wait_seconds_bucket", proxy="de-1", le="0.25") == 1
    assert one(s, "mtpoold_gate_wait_seconds_bucket", proxy="de-1", le="0.5") == 3
    assert one(s, "mtpoold_gate_wait_seconds_bucket", proxy="de-1", le="180.0") == 3
    assert one(s, "mtpoold_gate_wait_seconds_bucket", proxy="de-1", le="+Inf") == 4
    assert one(s, "mtpoold_gate_wait_seconds_count", proxy="de-1") == 4
    assert one(s, "mtpoold_gate_wait_seconds_sum", proxy="de-1") == pytest.approx(700.601)
    assert one(s, "mtpoold_call_duration_seconds_bucket", proxy="de-1", le="0.025") == 1
    assert one(s, "mtpoold_call_duration_seconds_count", proxy="no_proxy") == 0
    buckets = [
        dict(k)["le"] for k in s["mtpoold_gate_wait_seconds_bucket"] if ("proxy", "de-1") in k
    ]
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1


def test_collector_budgets_and_server() -> None:
    s = scrape(_collector())
    assert one(s, "mtpoold_budget_spent", rate_class="resolve", window="per_hour") == 30
    assert one(s, "mtpoold_budget_limit", rate_class="resolve", window="per_day") == 400
    assert one(s, "mtpoold_budget_exhausted_accounts", rate_class="resolve", window="per_hour") == 1
    assert one(s, "mtpoold_ws_connections") == 2
    assert one(s, "mtpoold_ws_in_flight") == 1
    assert one(s, "mtpoold_ws_requests_total") == 41
    assert one(s, "mtpoold_ws_rejected_handshakes_total") == 3
    assert one(s, "mtpoold_ws_draining") == 0
    without_server = scrape(PoolCollector(fake_statistics, build=BUILD))
    assert not [n for n in without_server if n.startswith("mtpoold_ws_")]


def test_cluster_families_only_in_cluster_mode() -> None:
    single = scrape(_collector())
    assert "mtpoold_forwarded_jobs_total" not in single
    assert "mtpoold_missed_starts_total" not in single
    s = scrape(
        _collector(
            cluster_statistics=lambda: {"forwarded": {"ok": 5, "lost": 1}, "missed_starts": 2}
        )
    )
    # every outcome, the unseen ones as 0, so a dashboard's series never vanish
    assert {dict(k)["outcome"]: v for k, v in s["mtpoold_forwarded_jobs_total"].items()} == {
        "ok": 5, "error": 0, "lost": 1, "unreachable": 0,
    }  # fmt: skip
    assert one(s, "mtpoold_missed_starts_total") == 2


def test_per_account_series_only_when_asked() -> None:
    default = scrape(_collector())
    for name in default:  # no label anywhere carries an account id
        for labels in default[name]:
            assert not {v for _, v in labels} & {"a1", "a2", "a3", "a4"}, (name, labels)
    s = scrape(_collector(per_account=True))
    assert one(s, "mtpoold_account_state", account="a3", state="cooldown") == 1
    assert one(s, "mtpoold_account_cooldown_seconds", account="a3") == 60
    assert one(s, "mtpoold_account_calls_total", account="a1", outcome="ok") == 5
    assert one(s, "mtpoold_account_calls_total", account="a1", outcome="failed") == 1


def test_nothing_of_an_error_message_or_reason_is_exported() -> None:
    text = generate_latest(metrics_registry(fake_statistics, FakeServer, per_account=True))
    assert b"SESSION_REVOKED: gone" not in text
    assert b"A wait of 300 seconds" not in text


def test_the_registry_carries_the_process_collector() -> None:
    text = generate_latest(metrics_registry(fake_statistics)).decode()
    if Path("/proc/self/stat").exists():
        assert "process_resident_memory_bytes " in text
        assert "process_open_fds " in text


def test_each_registry_is_its_own_and_nothing_is_global() -> None:
    from prometheus_client import REGISTRY

    before = set(REGISTRY._names_to_collectors)
    first = metrics_registry(fake_statistics)
    second = metrics_registry(fake_statistics)  # a second daemon in the process: no clash
    assert set(REGISTRY._names_to_collectors) == before
    pool_part = [ln for ln in generate_latest(first).splitlines() if ln.startswith(b"mtpoold_")]
    assert pool_part == [
        ln for ln in generate_latest(second).splitlines() if ln.startswith(b"mtpoold_")
    ]


# --- the histogram --------------------------------------------------------------------------------


def test_histogram_buckets_are_upper_bounds_inclusive() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.0, 0.1, 0.1000001, 1.0, 5.0, -1.0):
        h.observe(v)
    snap = h.statistics()
    assert snap.counts == (3, 2, 1)  # -1 counts as 0; 0.1 is in le=0.1; 1.0 in le=1.0
    assert snap.count == 6
    assert snap.sum_s == pytest.approx(6.2000001)
    assert HistogramStatistics() == Histogram().statistics()


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, float("inf"))])
def test_histogram_refuses_bad_bounds(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="bucket bounds"):
        Histogram(bounds)


# --- the endpoint ---------------------------------------------------------------------------------


def _registry() -> Any:
    return metrics_registry(fake_statistics, FakeServer)


def _split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("ascii").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


def test_http_answer_paths_and_methods() -> None:
    status, headers, body = _split(
        http_answer(_registry(), b"GET /metrics?x=1 HTTP/1.1\r\nHost: a")
    )
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert int(headers["Content-Length"]) == len(body)
    assert b"mtpoold_jobs_total" in body
    status, headers, body = _split(http_answer(_registry(), b"HEAD /metrics HTTP/1.0"))
    assert status == "HTTP/1.1 200 OK" and body == b"" and int(headers["Content-Length"]) > 0
    assert _split(http_answer(_registry(), b"GET / HTTP/1.1"))[0] == "HTTP/1.1 404 Not Found"
    assert _split(http_answer(_registry(), b"GET /metricsx HTTP/1.1"))[0].endswith("404 Not Found")
    status, headers, _ = _split(http_answer(_registry(), b"POST /metrics HTTP/1.1"))
    assert status.endswith("405 Method Not Allowed") and headers["Allow"] == "GET, HEAD"
    for bad in (b"GET /metrics", b"\xff\xfe", b"GET /metrics SPDY/3", b"a b c d"):
        assert _split(http_answer(_registry(), bad))[0].endswith("400 Bad Request"), bad


def test_http_answer_500_when_statistics_fail(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> PoolStatistics:
        raise RuntimeError("boom")

    status, _, _ = _split(http_answer(metrics_registry(broken), b"GET /metrics HTTP/1.1"))
    assert status.endswith("500 Internal Server Error")
    assert "event=metrics_failed" in caplog.text


async def _exchange(address: str, data: bytes, *, close_write: bool = True) -> bytes:
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(data)
        if close_write:
            await stream.send_eof()
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
        return out


@pytest.fixture
async def endpoint() -> Any:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_metrics, _registry(), "127.0.0.1:0")
        yield address
        nursery.cancel_scope.cancel()


async def test_endpoint_serves_a_scrape(endpoint: str) -> None:
    status, headers, body = _split(await _exchange(endpoint, b"GET /metrics HTTP/1.1\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK" and headers["Connection"] == "close"
    names = {f.name for f in text_string_to_metric_families(body.decode("utf-8"))}
    assert {"mtpoold_jobs", "mtpoold_gate_wait_seconds", "mtpoold_ws_requests"} <= names
    status, _, _ = _split(await _exchange(endpoint, b"GET /nope HTTP/1.1\r\n\r\n"))
    assert status.endswith("404 Not Found")


async def test_endpoint_bounds_the_request(endpoint: str) -> None:
    big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_REQUEST_BYTES + 10) + b"\r\n\r\n"
    status, _, _ = _split(await _exchange(endpoint, big))
    assert status.endswith("431 Request Header Fields Too Large")
    # a client that closes before its request ends gets nothing, and the endpoint lives on
    assert await _exchange(endpoint, b"GET /metr") == b""
    status, _, _ = _split(await _exchange(endpoint, b"GET /metrics HTTP/1.1\r\n\r\n"))
    assert status.endswith("200 OK")


async def test_endpoint_times_out_a_slow_request(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_metrics, _registry(), "127.0.0.1:0")
        host, port = address.rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(b"GET /metrics HTTP/1.1\r\n")  # never the blank line
            with trio.fail_after(60):
                reply = await stream.receive_some(65536)
        assert reply.startswith(b"HTTP/1.1 408 Request Timeout")
        nursery.cancel_scope.cancel()


async def test_a_scraper_that_never_reads_its_response_frees_its_slot(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``send_all`` had no deadline: MAX_CONNECTIONS scrapers that send a request and never
    read a response larger than their socket buffers held every slot for ever."""
    from mtpoold._metrics import MAX_CONNECTIONS, WRITE_TIMEOUT_S, _serve_one

    slots = trio.CapacityLimiter(MAX_CONNECTIONS)
    client, server = trio.testing.lockstep_stream_pair()  # no buffer: nothing is taken
    with trio.fail_after(WRITE_TIMEOUT_S + 10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_one, _registry(), slots, server)
            await client.send_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            await trio.sleep(1)
            assert slots.borrowed_tokens == 1  # answering, the client reads nothing
    assert slots.borrowed_tokens == 0


async def test_endpoint_refuses_a_unix_address() -> None:
    with pytest.raises(ValueError, match="host:port"):
        await serve_metrics(_registry(), "unix:/tmp/x.sock")


# --- [metrics] in the config ----------------------------------------------------------------------


def test_metrics_section_absent_means_off_present_means_defaults() -> None:
    assert parse_config({}, base_dir=Path("/x")).metrics is None
    assert parse_config({"metrics": {}}, base_dir=Path("/x")).metrics == MetricsConfig(
        listen="127.0.0.1:9464", per_account=False
    )
    cfg = parse_config(
        {"metrics": {"listen": "[::1]:9100", "per_account": True}}, base_dir=Path("/x")
    )
    assert cfg.metrics == MetricsConfig(listen="[::1]:9100", per_account=True)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"listen": "unix:/run/m.sock"}, 'metrics.listen: expected "host:port" (Prometheus'),
        ({"listen": "9464"}, 'metrics.listen: expected "host:port", got "9464"'),
        ({"listen": "127.0.0.1:0"}, "metrics.listen: expected"),
        ({"listen": 9464}, "metrics.listen: expected a string"),
        ({"lisen": "127.0.0.1:1"}, "metrics.lisen: unknown key"),
        ({"per_account": "yes"}, "metrics.per_account: expected a boolean"),
    ],
)
def test_metrics_section_problems(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"metrics": section}, base_dir=Path("/x"))
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(problem), info.value.problems


def test_example_config_shows_the_metrics_section_commented() -> None:
    text = EXAMPLE_CONFIG.read_text()
    assert re.search(r"^# \[metrics\]$", text, re.M)
    for f in attrs.fields(MetricsConfig):
        assert re.search(rf"^# {f.name} = ", text, re.M), f.name


# --- the Grafana dashboard ------------------------------------------------------------------------


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def exported_sample_names() -> set[str]:
    """Every sample name the collector can export (per-account ones included)."""
    registry = metrics_registry(fake_statistics, FakeServer, per_account=True)
    text = generate_latest(registry).decode("utf-8")
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples if isinstance(sample, Sample))
    return names


def test_dashboard_is_valid_json_and_names_only_exported_families() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["panels"]
    exprs = list(_exprs(dashboard))
    assert len(exprs) >= 6
    exported = exported_sample_names()
    used = {name for e in exprs for name in re.findall(r"\bmtpoold_[a-z0-9_]+", e)}
    assert used and used <= exported, sorted(used - exported)
    # what the issue asks a dashboard to show
    for family in (
        "mtpoold_jobs_total", "mtpoold_lane_calls_total", "mtpoold_lane_errors_total",
        "mtpoold_gate_wait_seconds_bucket", "mtpoold_accounts", "mtpoold_class_cooldowns",
        "mtpoold_budget_spent",
    ):  # fmt: skip
        assert family in used, family
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- reload ---------------------------------------------------------------------------------------


@attrs.define
class ReloadingPool:
    configs: list[Any] = attrs.field(factory=list)

    async def reload(self, config: Any) -> Any:
        from mtpoold._pool import ReloadSummary

        self.configs.append(config)
        return ReloadSummary(generation=2, added=(), removed=(), reconnected=())


async def test_reload_that_changes_metrics_says_it_applies_after_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mtpoold._config import load_config
    from mtpoold._daemon import Reloader

    path = tmp_path / "mtpoold.toml"
    path.write_text('[metrics]\nlisten = "127.0.0.1:9464"\n')
    pool = ReloadingPool()
    reloader = Reloader(pool, load_config(path), path)  # type: ignore[arg-type]
    assert (await reloader())["notes"] == []  # unchanged: nothing to say
    path.write_text('[metrics]\nlisten = "127.0.0.1:9100"\n')
    result = await reloader()
    assert result["notes"] == ["[metrics] settings changed: they apply after a restart"]
    assert "event=reload_metrics_changed" in caplog.text
    assert pool.configs[-1].metrics.listen == "127.0.0.1:9100"  # the pool has the new config
    path.write_text("")  # the section removed: the same rule
    assert (await reloader())["notes"] == ["[metrics] settings changed: they apply after a restart"]
    # compared with what runs (the file the daemon started with), not the last file loaded:
    # the same changed file reloaded again still says so, one edited back says nothing
    assert (await reloader())["notes"] == ["[metrics] settings changed: they apply after a restart"]
    path.write_text('[metrics]\nlisten = "127.0.0.1:9464"\n')
    assert (await reloader())["notes"] == []


async def test_endpoint_names_its_address_when_it_cannot_bind() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"metrics.listen 127.0.0.1:{port}: .*in use"):
            await serve_metrics(_registry(), f"127.0.0.1:{port}")


# --- what "connected" counts, on a real pool ------------------------------------------------


async def test_accounts_connected_counts_live_connections_a_disabled_one_closes_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The gauge counts live connections. Disabling closes the account's idle connection
    at once: no keepalive ping for an account the pool will not use (before, it lived on,
    pinging, until ``idle_disconnect_s`` after its last call)."""
    from prometheus_client.registry import CollectorRegistry

    from mtpoold._compose import open_pool

    from _fakeclient import World, make_config

    world = World()
    config = make_config(
        tmp_path,
        accounts={"a1": "p1"},
        proxies={"p1": {"interval_s": 0.0}},
        telegram={"idle_disconnect_s": 600.0},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        collector = PoolCollector(pool.statistics, build=BUILD)
        await pool.invoke("help.GetConfig", {})
        assert one(scrape(collector), "mtpoold_accounts_connected") == 1
        lane_calls = pool.statistics().proxies[0].calls
        pool.disable_account("a1")
        await trio.sleep(1)
        assert one(scrape(collector), "mtpoold_accounts_connected") == 0
        await trio.sleep(400)  # past several keepalive intervals: nothing went out
        assert pool.statistics().proxies[0].calls == lane_calls
        registry = CollectorRegistry()
        registry.register(collector)
        text = generate_latest(registry).decode("utf-8")
        assert (
            "# HELP mtpoold_accounts_connected Accounts whose MTProto connection is up now; a"
            " disabled account's is closed when it is disabled (after its call in flight) and"
            " sends no keepalive pings.\n"
        ) in text


def test_the_daemon_feeds_the_cluster_families_from_its_doors_and_node() -> None:
    from types import SimpleNamespace

    from mtpoold._daemon import _cluster_metrics
    from mtpoold._startwindow import StartWindow

    window = StartWindow()
    window.observe(0.2, 0.01)  # a start 200 ms late for its 10 ms window: missed
    pool = SimpleNamespace(cluster=SimpleNamespace(start_window=window))
    doors = SimpleNamespace(forwarded={"ok": 3})
    assert _cluster_metrics(SimpleNamespace(cluster=None), None) is None  # one node
    source = _cluster_metrics(pool, doors)  # type: ignore[arg-type]
    assert source is not None
    assert source() == {"forwarded": {"ok": 3}, "missed_starts": 1}
    doors.forwarded = {"ok": 4}  # read at each scrape, not copied once
    assert source()["forwarded"] == {"ok": 4}
