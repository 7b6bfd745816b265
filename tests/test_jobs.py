"""Jobs in flight (`Pool.jobs`, the ``jobs`` method, ``mtpoold jobs``): a real pool on the
scripted client double with jobs blocked at each hop, and the caller's errors kept apart from
the accounts' failures."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from telethon import errors as tg

from mtpoold._cli import main
from mtpoold._compose import open_pool
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._jobs import JobPhase, JobStatistics
from mtpoold._rpcclient import call, parse_target
from mtpoold._server import RpcServer
from mtpoold._stats import AccountState

from _fakeclient import Sleep, World, make_config

TOKEN = "jobs-test-token-0123456789"


def _fleet_config(tmp_path: Path) -> Any:
    return make_config(
        tmp_path,
        proxies={
            "p1": {"interval_s": 10.0, "capacity": 2},  # a gate with a queue
            "p2": {"interval_s": 0.0, "capacity": 1},  # one token
            "p3": {"interval_s": 0.0, "capacity": 1},
            "p4": {"interval_s": 0.0, "capacity": 1},
        },
        accounts={"a1": "p1", "a2": "p1", "b1": "p2", "b2": "p2", "c1": "p3", "d1": "p4"},
        policy={"job_deadline_s": 300},
    )


def _script(world: World) -> None:
    for acc in ("a1", "a2", "b1", "b2"):
        world.script(acc, Sleep(600))
    world.connect_scripts["c1"].append(Sleep(600))  # a connect that hangs
    # d1 answers FLOOD_WAIT: its job waits for d1's cooldown to end
    world.script("d1", tg.FloodWaitError(request=None, capture=37))


def _by_account(jobs: tuple[JobStatistics, ...]) -> dict[str | None, list[JobStatistics]]:
    out: dict[str | None, list[JobStatistics]] = {}
    for j in jobs:
        out.setdefault(j.account, []).append(j)
    return out


async def test_jobs_show_each_hop_and_what_it_waits_for(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    _script(world)
    async with open_pool(_fleet_config(tmp_path), client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            for acc in ("a1", "a2", "a1", "b1", "b2", "c1", "d1"):
                nursery.start_soon(
                    lambda acc=acc: pool.invoke("help.GetConfig", {}, account=acc, deadline_s=200)
                )
                await trio.sleep(0.01)
            await trio.sleep(1.0)
            jobs = pool.jobs()
            assert [j.job for j in jobs] == sorted(j.job for j in jobs)  # oldest first
            assert len(jobs) == 7 == pool.statistics().jobs_in_flight
            states = {(j.account, j.state) for j in jobs}
            by_state: dict[JobPhase, list[JobStatistics]] = {}
            for j in jobs:
                by_state.setdefault(j.state, []).append(j)

            # a2's connect, then a1's call (after its connect) queue at p1's gate (10 s
            # between starts), FIFO
            gate = sorted(by_state[JobPhase.WAITING_GATE], key=lambda j: j.waiting_for["position"])
            assert [(j.account, j.waiting_for["position"]) for j in gate] == [("a2", 1), ("a1", 2)]
            assert all(j.waiting_for["lane"] == "p1" for j in gate)
            assert 0 < gate[0].waiting_for["slot_in_ms"] <= 10_000
            assert gate[1].waiting_for["slot_in_ms"] > gate[0].waiting_for["slot_in_ms"]
            # the second job pinned to a1 waits for it
            (waiting,) = [
                j
                for j in by_state[JobPhase.WAITING_ACCOUNT]
                if j.waiting_for["why"] == "all 1 busy"
            ]
            assert waiting.account is None and waiting.attempts == 0
            # b1 is in its call; b2 waits for p2's only token
            (in_call,) = by_state[JobPhase.IN_CALL]
            assert in_call.account == "b1" and in_call.waiting_for["lane"] == "p2"
            assert in_call.waiting_for["elapsed_ms"] > 0
            (capacity,) = by_state[JobPhase.WAITING_LANE_CAPACITY]
            assert capacity.account == "b2"
            assert capacity.waiting_for | {"queued": 1} == {
                "account": "b2",
                "lane": "p2",
                "in_flight": 1,
                "capacity": 1,
                "queued": 1,
            }
            # c1's connect hangs
            assert ("c1", JobPhase.CONNECTING) in states
            # d1 answered FLOOD_WAIT 37: its job waits for the cooldown, and says so
            (cooling,) = [
                j for j in jobs if j.attempts == 1 and j.state is JobPhase.WAITING_ACCOUNT
            ]
            assert cooling.account == "d1"
            assert cooling.waiting_for["why"] == "1 cooling until +36.0 s", cooling.waiting_for
            assert 35 < cooling.waiting_for["until_s"] <= 37
            for j in jobs:
                assert j.method == "help.GetConfig"
                assert j.rate_classes == ("other",)
                assert 0 < j.age_s < 2 and 198 < j.deadline_left_s < 200
                assert (j.connection, j.rpc_id) == (None, None)  # a Python caller's
            nursery.cancel_scope.cancel()
        assert pool.jobs() == ()
        assert pool.statistics().jobs_in_flight == 0


async def test_shared_jobs_show_their_flight(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(600))
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0}},
        accounts={"a1": "p1"},
        economy={"share_identical": True},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(pool.resolve, "durov")
            await trio.sleep(1.0)
            jobs = pool.jobs()
            assert [(j.shared, j.state, j.account) for j in jobs] == [
                (True, JobPhase.IN_CALL, "a1"),
                (True, JobPhase.IN_CALL, "a1"),
            ]
            nursery.cancel_scope.cancel()


async def test_a_read_only_job_alone_in_its_flight_is_not_shared(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Every read-only job rides in a flight; one alone was listed ``shared`` (and
    ``mtpoold jobs`` wrote ``resolve (shared)``) though no other job shared its call."""
    world = World()
    world.script("a1", Sleep(600))
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0}},
        accounts={"a1": "p1"},
        economy={"share_identical": True},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.resolve, "durov")
            await trio.sleep(1.0)
            assert [(j.shared, j.state) for j in pool.jobs()] == [(False, JobPhase.IN_CALL)]
            nursery.cancel_scope.cancel()


async def test_caller_errors_are_kept_apart_from_the_accounts_failures(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script(
        "a1",
        tg.UsernameNotOccupiedError(request=None),
        tg.UsernameInvalidError(request=None),
        tg.RPCError(request=None, message="SOMETHING_ODD", code=500),
    )
    config = make_config(tmp_path, proxies={"p1": {"interval_s": 0.0}}, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        for peer in ("nobody_here", "bad_name_2"):
            with pytest.raises(JobFailed) as failed:
                await pool.resolve(peer)
            assert failed.value.error_class is ErrorClass.PEER_NOT_FOUND
        (acc,) = pool.statistics().accounts
        assert (acc.caller_errors, acc.calls_failed, acc.last_error_class) == (2, 0, None)
        assert acc.errors_by_class == {}
        with pytest.raises(JobFailed):
            await pool.invoke("help.GetConfig", {}, deadline_s=5)
        (acc,) = pool.statistics().accounts
        assert (acc.caller_errors, acc.calls_failed, acc.last_error_class) == (2, 1, "GENERIC")


async def test_status_summary_adds_up_by_state(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    for acc in ("a1", "a2"):
        world.script(acc, Sleep(600))
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0, "capacity": 4}, "idle": {}},
        accounts={"a1": "p1", "a2": "p1", "a3": "p1", "a4": "p1"},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        pool.disable_account("a4", "test")
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(pool.invoke, "help.GetConfig", {})
            await trio.sleep(1.0)
            summary = pool.statistics(accounts=False)
            assert summary.accounts == ()
            assert summary.accounts_by_state == {
                "idle": 1,
                "connecting": 0,
                "ready": 0,
                "busy": 2,
                "cooldown": 0,
                "disabled": 1,
                "retired": 0,
                "remote": 0,
            }
            assert sum(summary.accounts_by_state.values()) == summary.accounts_total == 4
            assert (summary.accounts_ready, summary.accounts_disabled) == (1, 1)
            full = pool.statistics()
            assert [a.state for a in full.accounts].count(AccountState.BUSY) == 2
            assert {p.name for p in full.proxies} == {"p1", "idle"}  # a lane nobody uses too
            nursery.cancel_scope.cancel()


# --- the jobs method and `mtpoold jobs`, end to end ----------------------------------------------


@attrs.define
class Daemon:
    url: str
    token_file: Path

    def args(self) -> list[str]:
        return ["--url", self.url, "--token-file", str(self.token_file)]


@pytest.fixture
def busy_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """An RpcServer over a real pool (scripted clients, real clock) in its own thread, with
    a job from a websocket client (id "job-7") in a call and one waiting for its account."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    ready: queue.Queue[Any] = queue.Queue()
    world = World()
    world.script("a1", Sleep(600))
    config = make_config(tmp_path, proxies={"p1": {"interval_s": 0.0}}, accounts={"a1": "p1"})

    def runner() -> None:
        async def serve() -> None:
            async with open_pool(config, client_factory=world.factory()) as pool:
                server = RpcServer(pool, TOKEN, listen="127.0.0.1:0")
                async with trio.open_nursery() as nursery:
                    address = await nursery.start(server.run)
                    target = parse_target(f"ws://{address}/")
                    params = {"method": "help.GetConfig", "args": {}}
                    for _ in range(2):
                        nursery.start_soon(
                            lambda: call(target, TOKEN, "invoke", params, timeout_s=600)
                        )
                    ready.put((address, nursery.cancel_scope, trio.lowlevel.current_trio_token()))

        trio.run(serve)

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    address, scope, trio_token = ready.get(timeout=10)
    try:
        yield Daemon(f"ws://{address}/", token_file)
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=trio_token)
        thread.join(10)
    assert not thread.is_alive()


def test_mtpoold_jobs_end_to_end(
    busy_daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    for _ in range(500):  # until both jobs reached their hops (at most ~5 s)
        assert main(["jobs", "--json", *busy_daemon.args()]) == 0
        reply = json.loads(capsys.readouterr().out)
        states = sorted(j["state"] for j in reply["jobs"])
        if states == ["in_call", "waiting_account"]:
            break
        threading.Event().wait(0.01)
    assert states == ["in_call", "waiting_account"], reply
    for j in reply["jobs"]:
        assert j["method"] == "help.GetConfig"
        assert j["connection"].startswith("127.0.0.1:")
        assert j["rpc_id"] is not None
        assert set(j) == {
            "job",
            "connection",
            "rpc_id",
            "method",
            "rate_classes",
            "age_s",
            "deadline_left_s",
            "attempts",
            "account",
            "shared",
            "state",
            "waiting_for",
        }
    assert main(["jobs", *busy_daemon.args()]) == 0
    out = capsys.readouterr().out
    assert "Jobs in flight (2)" in out
    assert "in_call a1@p1" in out
    assert "waiting_account #1: all 1 busy" in out
    assert max(map(len, out.splitlines())) <= 80
    # and the status summary counts the busy account
    assert main(["status", *busy_daemon.args()]) == 0
    assert "accounts 1: busy 1" in capsys.readouterr().out
    assert main(["call", "status", '{"summary": true}', *busy_daemon.args()]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accounts"] == [] and summary["accounts_by_state"]["busy"] == 1


async def test_a_job_backing_off_says_until_when(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", tg.RPCError(request=None, message="SOMETHING_ODD", code=500))
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0}},
        accounts={"a1": "p1"},
        policy={"generic_cooldown_s": 0.0, "backoff_s": [30.0]},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.invoke, "help.GetConfig", {})
            await trio.sleep(1.0)
            (job,) = pool.jobs()
            assert (job.state, job.attempts, job.account) == (JobPhase.BACKOFF, 1, "a1")
            assert 28 < job.waiting_for["until_s"] <= 30
            nursery.cancel_scope.cancel()


async def test_a_job_waiting_for_a_class_cooldown_says_so(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(tmp_path, proxies={"p1": {"interval_s": 0.0}}, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        # what a scoped FLOOD_WAIT of a ResolveUsername applies (the double names no TL function)
        cause = "FLOOD_WAIT: FLOOD_WAIT_100 (420)"
        until_at = trio.current_time() + 100
        pool._dispatch.cool_down_class(pool._accounts["a1"], "resolve", until_at, cause)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: pool.invoke("contacts.ResolveUsername", {"username": "durov"})
            )
            await trio.sleep(1.0)
            (job,) = pool.jobs()
            assert job.rate_classes == ("resolve",)
            assert job.state is JobPhase.WAITING_ACCOUNT
            assert job.waiting_for["why"].startswith("1 class cooldown until +9"), job
            (acc,) = pool.statistics().accounts
            assert acc.state is AccountState.IDLE  # it serves other classes meanwhile
            assert [(c.rate_class, c.cause) for c in acc.rate_classes] == [("resolve", cause)]
            nursery.cancel_scope.cancel()
