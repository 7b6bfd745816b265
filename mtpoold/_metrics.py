"""Prometheus metrics: a collector over the pool's and the server's statistics, served by trio.

`PoolCollector` is a `prometheus_client` custom collector: at each scrape it takes one
`mtpoold.Pool.statistics` snapshot (and the websocket server's) and yields metric families
from it; nothing is kept between scrapes and no metric object of the process-wide default
registry is used. Each daemon has its own `prometheus_client.CollectorRegistry`
(`metrics_registry`). `serve_metrics` answers ``GET /metrics`` with that registry's text
exposition, from the daemon's nursery (no thread, unlike ``prometheus_client.start_http_server``).

Families (every time in seconds, Prometheus' base unit; ``proxy`` is the proxy's name from the
config, ``no_proxy`` for the direct lane; ``rate_class`` as in `mtpoold._rateclass`)::

    mtpoold_build_info{version,python,telethon}     gauge, always 1
    mtpoold_uptime_seconds                          gauge
    mtpoold_config_generation                       gauge, +1 per successful reload
    mtpoold_config_loaded_timestamp_seconds         gauge, UNIX time
    mtpoold_jobs_in_flight                          gauge
    mtpoold_jobs_total{rate_class,outcome}          counter; outcome OK, an ErrorClass value
                                                    (FLOOD_WAIT, PROXY_UNAVAILABLE, ...) or
                                                    CANCELLED, as the pool's call log says it
    mtpoold_accounts{state}                         gauge, every `AccountState`, 0 included
    mtpoold_accounts_connected                      gauge: live MTProto connections (a
                                                    disabled account's is closed when it is
                                                    disabled, after its call in flight)
    mtpoold_accounts_cooling                        gauge: held by their own or proxy cooldown
    mtpoold_account_cooldown_seconds_max            gauge: longest account-wide cooldown left
    mtpoold_class_cooldowns{rate_class}             gauge: accounts whose class is cooling
    mtpoold_class_cooldown_seconds_max{rate_class}  gauge: longest class cooldown left
    mtpoold_orphaned_accounts                       gauge: in the state store, not the config
    mtpoold_lane_capacity{proxy,type}               gauge
    mtpoold_lane_interval_seconds{proxy}            gauge
    mtpoold_lane_in_flight{proxy}                   gauge
    mtpoold_lane_waiting{proxy}                     gauge
    mtpoold_lane_cooldown_seconds{proxy}            gauge: proxy cooldown left (0: usable)
    mtpoold_lane_consecutive_failures{proxy}        gauge
    mtpoold_lane_calls_total{proxy}                 counter: calls, connects, pings started
    mtpoold_lane_errors_total{proxy,error_class}    counter: failed calls by error class
    mtpoold_gate_wait_seconds{proxy}                histogram: asking a slot -> the start
                                                    (capacity token + rate gate)
    mtpoold_call_duration_seconds{proxy}            histogram: a started slot held (the call)
    mtpoold_budget_spent{rate_class,window}         gauge, summed over the accounts
    mtpoold_budget_limit{rate_class,window}         gauge, summed over the accounts
    mtpoold_budget_exhausted_accounts{rate_class,window}  gauge
    mtpoold_ws_connections                          gauge (the JSON-RPC server: websocket and
                                                    HTTP POST; the prefix predates POST)
    mtpoold_ws_in_flight                            gauge
    mtpoold_ws_requests_total                       counter
    mtpoold_ws_rejected_handshakes_total            counter
    mtpoold_ws_draining                             gauge, 1 during a shutdown
    mtpoold_forwarded_jobs_total{outcome}           counter, cluster mode: jobs this node
                                                    forwarded to a peer (`mtpoold._forward`)
                                                    by outcome: ok, error, lost, unreachable
    mtpoold_missed_starts_total                     counter, cluster mode: starts later than
                                                    their window, slot left unused
                                                    (`mtpoold._startwindow`)
    process_*                                       prometheus_client's process collector
                                                    (CPU, memory, file descriptors; Linux)

**Cardinality.** Series grow with proxies (about 40 per lane, the two histograms included),
rate classes and error classes, never with accounts: a fleet of thousands of accounts is
aggregated by state, lane and class. Per-account series (``mtpoold_account_state``,
``mtpoold_account_cooldown_seconds``, ``mtpoold_account_calls_total``, labelled with the
account id from the config) come only with ``[metrics] per_account = true``.

**No token.** The endpoint takes no bearer token: Prometheus scrapers send none (they speak
plain HTTP, not the daemon's JSON-RPC), and what it shows is counts, states, proxy names and,
with ``per_account``, account ids — what ``status`` shows minus every message text; never a
secret (api_hash, session, auth key, proxy password, MTProxy secret), a phone number or a
name. Its address defaults to loopback (``127.0.0.1:9464``); exposing it wider is the
operator's choice, as with any exporter (a firewall, or a reverse proxy with auth).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import logging
import platform
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Protocol, final

import trio
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ._forward import FORWARD_OUTCOMES
from ._latency import HistogramStatistics
from ._listen import parse_listen
from ._logformat import log_event
from ._stats import AccountState, PoolStatistics

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "METRICS_PATH",
    "READ_TIMEOUT_S",
    "PoolCollector",
    "ServerStatisticsLike",
    "http_answer",
    "metrics_registry",
    "serve_metrics",
]

log = logging.getLogger("mtpoold.metrics")

#: The one path answered (Prometheus' default ``metrics_path``).
METRICS_PATH: Final = "/metrics"
#: Largest request head read, bytes (request line and headers); larger: 431, closed.
MAX_REQUEST_BYTES: Final = 8192
#: Seconds a client has to send its whole request head; slower: 408, closed.
READ_TIMEOUT_S: Final = 5.0
#: Scrapes served at once; one more connection is closed without an answer.
MAX_CONNECTIONS: Final = 16
#: Seconds a client has to take the whole response; slower (a scraper that never reads a
#: response its socket buffers cannot hold): closed, its slot freed.
WRITE_TIMEOUT_S: Final = 30.0


class ServerStatisticsLike(Protocol):
    """What the collector reads of `mtpoold._server.ServerStatistics`."""

    @property
    def connections(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def rejected_handshakes(self) -> int: ...
    @property
    def draining(self) -> bool: ...


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _build_labels() -> dict[str, str]:
    """``mtpoold_build_info``'s labels, read from installed metadata (no Telethon import)."""
    return {
        "version": _version("mtpoold"),
        "python": platform.python_version(),
        "telethon": _version("telethon"),
    }


def _buckets(h: HistogramStatistics) -> list[tuple[str, float]]:
    """Prometheus' cumulative ``le`` buckets from per-bucket counts, ``+Inf`` last."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(h.bounds_s, h.counts, strict=False):
        running += n
        out.append((repr(float(bound)), float(running)))  # as the client library spells them
    out.append(("+Inf", float(h.count)))
    return out


def _unix(iso: str) -> float:
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


@final
class PoolCollector(Collector):
    """Yields the daemon's metric families from fresh statistics at each scrape.

    Args:
        pool_statistics: Returns a `PoolStatistics` snapshot (`mtpoold.Pool.statistics`);
            called once per scrape, on the trio thread (it reads the trio clock).
        server_statistics: Returns the websocket server's snapshot, or None (no ``mtpoold_ws_*``
            families: a pool embedded without a server).
        per_account: Also yield the per-account families (see the module docstring on
            cardinality).
        build: ``mtpoold_build_info``'s labels; default: installed versions.
        cluster_statistics: Cluster mode: returns ``{"forwarded": {outcome: n},
            "missed_starts": n}`` (the ``mtpoold_forwarded_jobs_total`` and
            ``mtpoold_missed_starts_total`` families); None: one node, no such families.

    Families and their labels: the module docstring. Collecting never blocks; an exception
    from a statistics callable propagates to the caller (`serve_metrics` answers 500).
    """

    def __init__(
        self,
        pool_statistics: Callable[[], PoolStatistics],
        server_statistics: Callable[[], ServerStatisticsLike] | None = None,
        *,
        per_account: bool = False,
        build: dict[str, str] | None = None,
        cluster_statistics: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._pool_statistics = pool_statistics
        self._server_statistics = server_statistics
        self._cluster_statistics = cluster_statistics
        self.per_account = per_account
        self._build = build if build is not None else _build_labels()

    def describe(self) -> list[Metric]:
        """Nothing: the registry then neither checks names nor collects at registration
        (statistics need a running trio loop)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One scrape's families (see the module docstring)."""
        s = self._pool_statistics()
        yield from self._process(s)
        yield from self._jobs(s)
        yield from self._accounts(s)
        yield from self._lanes(s)
        yield from self._budgets(s)
        if self._server_statistics is not None:
            yield from self._server(self._server_statistics())
        if self._cluster_statistics is not None:
            yield from self._cluster(self._cluster_statistics())
        if self.per_account:
            yield from self._per_account(s)

    def _process(self, s: PoolStatistics) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "mtpoold_build_info",
            "mtpoold's version, Python's, Telethon's.",
            labels=list(self._build),
        )
        info.add_metric(list(self._build.values()), 1.0)
        yield info
        yield GaugeMetricFamily(
            "mtpoold_uptime_seconds", "Seconds since the pool opened.", value=s.uptime_s
        )
        yield GaugeMetricFamily(
            "mtpoold_config_generation",
            "1 for the config the daemon started with, +1 per successful reload.",
            value=s.config_generation,
        )
        yield GaugeMetricFamily(
            "mtpoold_config_loaded_timestamp_seconds",
            "When the config in force was loaded, UNIX seconds.",
            value=_unix(s.config_loaded_at),
        )

    def _jobs(self, s: PoolStatistics) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mtpoold_jobs_in_flight", "Jobs accepted and not yet answered.", value=s.jobs_in_flight
        )
        jobs = CounterMetricFamily(
            "mtpoold_jobs",
            "Answered jobs by the job's rate class and outcome (OK, the error class, CANCELLED).",
            labels=["rate_class", "outcome"],
        )
        for rate_class, outcomes in sorted(s.jobs_by_class.items()):
            for outcome, n in sorted(outcomes.items()):
                jobs.add_metric([rate_class, outcome], n)
        yield jobs

    def _accounts(self, s: PoolStatistics) -> Iterator[Metric]:
        by_state = dict.fromkeys(AccountState, 0)
        for a in s.accounts:
            by_state[AccountState(a.state)] += 1
        states = GaugeMetricFamily(
            "mtpoold_accounts", "Accounts in the config by state.", labels=["state"]
        )
        for state, n in by_state.items():
            states.add_metric([state.value], n)
        yield states
        yield GaugeMetricFamily(
            "mtpoold_accounts_connected",
            "Accounts whose MTProto connection is up now; a disabled account's is closed when"
            " it is disabled (after its call in flight) and sends no keepalive pings.",
            value=sum(1 for a in s.accounts if a.connected),
        )
        yield GaugeMetricFamily(
            "mtpoold_accounts_cooling",
            "Accounts held back by their own cooldown or their proxy's.",
            value=s.accounts_cooling,
        )
        yield GaugeMetricFamily(
            "mtpoold_account_cooldown_seconds_max",
            "Seconds left of the longest account-wide cooldown (0: none).",
            value=max((a.cooldown_remaining_s for a in s.accounts), default=0.0),
        )
        cooling: dict[str, int] = {}
        longest: dict[str, float] = {}
        for a in s.accounts:
            for c in a.rate_classes:
                cooling.setdefault(c.rate_class, 0)
                longest.setdefault(c.rate_class, 0.0)
                if c.cooldown_remaining_s > 0:
                    cooling[c.rate_class] += 1
                    longest[c.rate_class] = max(longest[c.rate_class], c.cooldown_remaining_s)
        count = GaugeMetricFamily(
            "mtpoold_class_cooldowns",
            "Accounts whose rate class is cooling down after a FLOOD_WAIT.",
            labels=["rate_class"],
        )
        left = GaugeMetricFamily(
            "mtpoold_class_cooldown_seconds_max",
            "Seconds left of the longest FLOOD_WAIT cooldown of the rate class.",
            labels=["rate_class"],
        )
        for rate_class in sorted(cooling):
            count.add_metric([rate_class], cooling[rate_class])
            left.add_metric([rate_class], longest[rate_class])
        yield count
        yield left
        yield GaugeMetricFamily(
            "mtpoold_orphaned_accounts",
            "Accounts the state store remembers that the config no longer has.",
            value=len(s.orphaned_accounts),
        )

    def _lanes(self, s: PoolStatistics) -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["proxy"])

        capacity = GaugeMetricFamily(
            "mtpoold_lane_capacity", "Calls the proxy may carry at once.", labels=["proxy", "type"]
        )
        interval = gauge("mtpoold_lane_interval_seconds", "Minimum seconds between two starts.")
        in_flight = gauge("mtpoold_lane_in_flight", "Calls and connects holding a slot.")
        waiting = gauge("mtpoold_lane_waiting", "Callers waiting for a slot or a start.")
        cooldown = gauge("mtpoold_lane_cooldown_seconds", "Seconds left of the proxy cooldown.")
        failures = gauge(
            "mtpoold_lane_consecutive_failures", "PROXY_UNAVAILABLE failures in a row."
        )
        calls = CounterMetricFamily(
            "mtpoold_lane_calls", "Calls, connects and pings started.", labels=["proxy"]
        )
        errors = CounterMetricFamily(
            "mtpoold_lane_errors", "Failed calls by error class.", labels=["proxy", "error_class"]
        )
        wait = HistogramMetricFamily(
            "mtpoold_gate_wait_seconds",
            "Seconds from asking the lane for a slot to the start (capacity token, rate gate).",
            labels=["proxy"],
        )
        duration = HistogramMetricFamily(
            "mtpoold_call_duration_seconds",
            "Seconds a started lane slot was held: one call, connect or keepalive ping.",
            labels=["proxy"],
        )
        for lane in s.proxies:
            p = [lane.name]
            capacity.add_metric([lane.name, lane.type], lane.capacity)
            interval.add_metric(p, lane.interval_s)
            in_flight.add_metric(p, lane.in_flight)
            waiting.add_metric(p, lane.waiting)
            cooldown.add_metric(p, lane.cooldown_remaining_s)
            failures.add_metric(p, lane.consecutive_failures)
            calls.add_metric(p, lane.calls)
            for error_class, n in sorted(lane.errors_by_class.items()):
                errors.add_metric([lane.name, error_class], n)
            wait.add_metric(p, _buckets(lane.gate_wait), lane.gate_wait.sum_s)
            duration.add_metric(p, _buckets(lane.call_latency), lane.call_latency.sum_s)
        yield from (capacity, interval, in_flight, waiting, cooldown, failures)
        yield from (calls, errors, wait, duration)

    def _budgets(self, s: PoolStatistics) -> Iterator[Metric]:
        labels = ["rate_class", "window"]
        spent = GaugeMetricFamily(
            "mtpoold_budget_spent",
            "Requests counted in the budget window, summed over the accounts.",
            labels=labels,
        )
        limit = GaugeMetricFamily(
            "mtpoold_budget_limit",
            "Budget limits of the window summed over the accounts (warm-up applied).",
            labels=labels,
        )
        exhausted = GaugeMetricFamily(
            "mtpoold_budget_exhausted_accounts",
            "Accounts with nothing left in the budget window.",
            labels=labels,
        )
        for b in s.budgets:
            key = [b.rate_class, b.window]
            spent.add_metric(key, b.spent)
            limit.add_metric(key, b.limit)
            exhausted.add_metric(key, b.exhausted)
        yield from (spent, limit, exhausted)

    def _server(self, srv: ServerStatisticsLike) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mtpoold_ws_connections",
            "Open websocket connections and HTTP POST requests in progress.",
            value=srv.connections,
        )
        yield GaugeMetricFamily(
            "mtpoold_ws_in_flight",
            "Jobs of both transports (websocket, HTTP POST) without a final reply yet.",
            value=srv.in_flight,
        )
        yield CounterMetricFamily(
            "mtpoold_ws_requests", "JSON-RPC requests answered or accepted.", value=srv.requests
        )
        yield CounterMetricFamily(
            "mtpoold_ws_rejected_handshakes",
            "Websocket upgrades and HTTP POST requests refused at the door (token, origin,"
            " shutting down).",
            value=srv.rejected_handshakes,
        )
        yield GaugeMetricFamily(
            "mtpoold_ws_draining", "1 while a shutdown drains.", value=1.0 if srv.draining else 0.0
        )

    def _per_account(self, s: PoolStatistics) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "mtpoold_account_state", "1 for the account's state.", labels=["account", "state"]
        )
        cooldown = GaugeMetricFamily(
            "mtpoold_account_cooldown_seconds",
            "Seconds left of the account's own cooldown.",
            labels=["account"],
        )
        calls = CounterMetricFamily(
            "mtpoold_account_calls",
            "Calls of the account by outcome (ok, failed).",
            labels=["account", "outcome"],
        )
        for a in s.accounts:
            state.add_metric([a.id, str(a.state)], 1.0)
            cooldown.add_metric([a.id], a.cooldown_remaining_s)
            calls.add_metric([a.id, "ok"], a.calls_ok)
            calls.add_metric([a.id, "failed"], a.calls_failed)
        yield from (state, cooldown, calls)

    @staticmethod
    def _cluster(c: Mapping[str, Any]) -> Iterator[Metric]:
        forwarded = CounterMetricFamily(
            "mtpoold_forwarded_jobs",
            "Jobs this node forwarded to the peer holding their account, by outcome.",
            labels=["outcome"],
        )
        for outcome in sorted(FORWARD_OUTCOMES | set(c.get("forwarded", {}))):
            forwarded.add_metric([outcome], c.get("forwarded", {}).get(outcome, 0))
        yield forwarded
        yield CounterMetricFamily(
            "mtpoold_missed_starts",
            "Starts later than their window: the slot left unused and another reserved.",
            value=c.get("missed_starts", 0),
        )


def metrics_registry(
    pool_statistics: Callable[[], PoolStatistics],
    server_statistics: Callable[[], ServerStatisticsLike] | None = None,
    *,
    per_account: bool = False,
    cluster_statistics: Callable[[], Mapping[str, Any]] | None = None,
) -> CollectorRegistry:
    """A registry of this daemon's own (nothing in the process-wide default one) holding a
    `PoolCollector` and prometheus_client's ``ProcessCollector`` (``process_*``: CPU seconds,
    resident memory, open file descriptors, start time; read from ``/proc``, absent where
    there is none).

    Args: as `PoolCollector`'s.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        PoolCollector(
            pool_statistics,
            server_statistics,
            per_account=per_account,
            cluster_statistics=cluster_statistics,
        )
    )
    ProcessCollector(registry=registry)
    return registry


# --- the endpoint ---------------------------------------------------------------------------------


def _response(status: str, body: bytes, content_type: str, *extra: str) -> bytes:
    head = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def _plain(status: str, text: str, *extra: str) -> bytes:
    return _response(status, text.encode("ascii") + b"\n", "text/plain; charset=utf-8", *extra)


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The request head (up to the blank line), or None when the client closed first.

    Raises:
        ValueError: longer than `MAX_REQUEST_BYTES`.
        trio.TooSlowError: not complete within `READ_TIMEOUT_S`.
    """
    buf = b""
    with trio.fail_after(READ_TIMEOUT_S):
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_REQUEST_BYTES:
                raise ValueError("request head too large")
            data = await stream.receive_some(4096)
            if not data:
                return None
            buf += data
    head = buf.split(b"\r\n\r\n", 1)[0]
    if len(head) > MAX_REQUEST_BYTES:
        raise ValueError("request head too large")
    return head


def http_answer(registry: CollectorRegistry, head: bytes) -> bytes:
    """The whole HTTP/1.1 response to one request head (``Connection: close``).

    ``GET`` or ``HEAD`` of `METRICS_PATH` (a query string is ignored): 200 with
    ``generate_latest(registry)`` as ``CONTENT_TYPE_LATEST`` (HEAD: the same head, no body);
    another method there: 405; any other path: 404; a malformed request line: 400; a collector
    that raised: 500 (logged; the daemon runs on).
    """
    try:
        method, target, version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        return _plain("400 Bad Request", "bad request line")
    if not version.startswith("HTTP/1."):
        return _plain("400 Bad Request", "HTTP/1.x only")
    if target.split("?", 1)[0] != METRICS_PATH:
        return _plain("404 Not Found", f"not found; metrics are at {METRICS_PATH}")
    if method not in ("GET", "HEAD"):
        return _plain("405 Method Not Allowed", "GET or HEAD only", "Allow: GET, HEAD")
    try:
        body = generate_latest(registry)
    except Exception:
        log_event(log, logging.ERROR, "metrics_failed", exc_info=True)
        return _plain("500 Internal Server Error", "collecting metrics failed")
    response = _response("200 OK", body, CONTENT_TYPE_LATEST)
    if method == "HEAD":
        return response[: len(response) - len(body)]
    return response


async def _serve_one(
    registry: CollectorRegistry, slots: trio.CapacityLimiter, stream: trio.abc.Stream
) -> None:
    """One connection: one request, one response, closed. Never raises (a broken client
    must not take the endpoint, nor the daemon's nursery, down)."""
    try:
        async with stream:
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                return  # too many scrapes at once: closed unanswered
            try:
                try:
                    head = await _read_head(stream)
                except trio.TooSlowError:
                    await stream.send_all(_plain("408 Request Timeout", "request too slow"))
                    return
                except ValueError:
                    await stream.send_all(
                        _plain("431 Request Header Fields Too Large", "request too large")
                    )
                    return
                if head is not None:
                    with trio.move_on_after(WRITE_TIMEOUT_S):
                        await stream.send_all(http_answer(registry, head))
            finally:
                slots.release()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the scraper went away
    except Exception:  # pragma: no cover - a bug here must not end the daemon
        log_event(log, logging.ERROR, "metrics_connection_failed", exc_info=True)


async def serve_metrics(
    registry: CollectorRegistry,
    listen: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on ``listen`` until cancelled (run it in the daemon's nursery).

    One request per connection (``Connection: close``); a request head over
    `MAX_REQUEST_BYTES` is answered 431, one not complete within `READ_TIMEOUT_S` 408, a
    response not taken within `WRITE_TIMEOUT_S` is cut; at most `MAX_CONNECTIONS` are served
    at once. Responses: `http_answer`.

    Args:
        registry: What to expose (`metrics_registry`).
        listen: ``"host:port"`` (``[metrics] listen``; port 0 picks a free one).
        task_status: Receives the bound address, ``"host:port"``, once listening.

    Raises:
        ValueError: ``listen`` is not ``host:port`` (`mtpoold._listen.ListenAddressError`).
        OSError: the address cannot be bound (the message names ``metrics.listen``).
    """
    address = parse_listen(listen)
    if address.host is None or address.port is None:
        raise ValueError(f"metrics listen address must be host:port, got {listen!r}")
    try:
        listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    except OSError as exc:  # named, so `mtpoold run` says which of its addresses it was
        raise OSError(exc.errno, f"metrics.listen {listen}: {exc.strerror or exc}") from None
    sockname = listeners[0].socket.getsockname()
    bound = _host_port(sockname[0], int(sockname[1]))
    log_event(log, logging.INFO, "metrics_listening", address=bound, path=METRICS_PATH)
    task_status.started(bound)
    slots = trio.CapacityLimiter(MAX_CONNECTIONS)
    await trio.serve_listeners(functools.partial(_serve_one, registry, slots), listeners)


def _host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
