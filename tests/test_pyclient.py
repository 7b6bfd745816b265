"""`mtpoold.client` against a real daemon (``mtpoold run``, real Telethon, the loopback DC):
each flavour — blocking, asyncio, trio — runs a resolve, a get_messages and a raw invoke,
and reads an error reply as `RpcError`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trio

from mtpoold.client import (
    AsyncioClient,
    AuthRejected,
    Client,
    DaemonUnreachable,
    Endpoint,
    JobReply,
    RpcError,
    TrioClient,
)

from _daemonproc import dc_daemon, free_port


def check_resolve(reply: JobReply) -> None:
    assert reply.value["kind"] == "channel"
    assert reply.value["username"] == "mtpoold_news"
    assert reply.value["title"] == "mtpoold News"
    assert reply.meta["account"] == "acc"
    assert reply.meta["elapsed_ms"] >= 0


def check_messages(reply: JobReply) -> None:
    assert reply.value["1"]["exists"] is True and reply.value["1"]["views"] == 1000
    assert reply.value["99"]["exists"] is False


def check_config(reply: JobReply) -> None:
    assert reply.value["_"] == "Config"
    assert reply.meta["attempts"] == 1


def check_not_found(exc: RpcError) -> None:
    assert exc.code == -32001 and exc.error_class == "PEER_NOT_FOUND"
    assert exc.data["class"] == "PEER_NOT_FOUND" and exc.http_status == 200


def blocking_run(config: Path) -> dict[str, Any]:
    client = Client.discover(config)
    out: dict[str, Any] = {
        "resolve": client.resolve("@mtpoold_news", deadline_ms=10_000),
        "messages": client.get_messages("@mtpoold_news", [1, 2, 99]),
        "link": client.get_messages("https://t.me/mtpoold_news/2"),  # the link's own id
        "invoke": client.invoke("help.GetConfig"),
        "status": client.status(),
        "batch": client.batch(
            [("ping", None), ("resolve", {"link_or_username": "@nobody_by_that_name"})]
        ),
    }
    try:
        client.resolve("@nobody_by_that_name")
    except RpcError as exc:
        out["error"] = exc
    return out


async def asyncio_run(config: Path) -> dict[str, Any]:
    client = AsyncioClient.discover(config)
    resolve, messages, invoke = await asyncio.gather(
        client.resolve("@mtpoold_news"),
        client.get_messages("@mtpoold_news", [1, 2, 99], deadline_ms=10_000),
        client.invoke("help.GetConfig", {}),
    )
    out: dict[str, Any] = {"resolve": resolve, "messages": messages, "invoke": invoke}
    out["status"] = await client.status()
    try:
        await client.resolve("@nobody_by_that_name")
    except RpcError as exc:
        out["error"] = exc
    return out


async def test_the_three_flavours_against_a_real_daemon(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with dc_daemon(tmp_path) as (config, _dc):
            # plain scripts (a thread: the DC runs in this test's trio loop)
            sync = await trio.to_thread.run_sync(blocking_run, config)
            check_resolve(sync["resolve"])
            check_messages(sync["messages"])
            assert list(sync["link"].value) == ["2"] and sync["link"].value["2"]["exists"]
            check_config(sync["invoke"])
            assert [a["id"] for a in sync["status"]["accounts"]] == ["acc"]
            pong, missing = sync["batch"]
            assert pong["pong"] is True
            check_not_found(missing)
            check_not_found(sync["error"])
            # asyncio programs (their own loop, in a thread)
            aio = await trio.to_thread.run_sync(asyncio.run, asyncio_run(config))
            check_resolve(aio["resolve"])
            check_messages(aio["messages"])
            check_config(aio["invoke"])
            check_not_found(aio["error"])
            # trio programs: one websocket, concurrent calls
            async with TrioClient.connect(config) as client:
                results: dict[str, JobReply] = {}

                async def run(name: str, job: Any) -> None:
                    results[name] = await job

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run, "resolve", client.resolve("@mtpoold_news"))
                    nursery.start_soon(
                        run, "messages", client.get_messages("@mtpoold_news", [1, 2, 99])
                    )
                    nursery.start_soon(run, "invoke", client.invoke("help.GetConfig"))
                check_resolve(results["resolve"])
                check_messages(results["messages"])
                check_config(results["invoke"])
                link = await client.get_messages("t.me/mtpoold_news/1")
                assert list(link.value) == ["1"]
                with pytest.raises(RpcError) as info:
                    await client.resolve("@nobody_by_that_name", account="acc")
                assert info.value.code == -32001 and info.value.http_status is None
                pong, bad = await client.batch([("ping", None), ("nope", None)])
                assert pong["pong"] is True and bad.code == -32601


async def test_wrong_token_and_no_daemon_raise_the_client_errors(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with dc_daemon(tmp_path) as (config, _dc):
            endpoint = Endpoint.discover(config)
            assert endpoint.token not in repr(endpoint)
            wrong = Endpoint(endpoint.target, "not-the-token")
            with pytest.raises(AuthRejected) as info:
                await trio.to_thread.run_sync(Client(wrong).status)
            assert info.value.http_status == 401 and info.value.code == -32600
            assert info.value.error_class == "UNAUTHORIZED"
            assert isinstance(info.value, RpcError)
            with pytest.raises(AuthRejected):
                async with TrioClient.connect(endpoint=wrong):
                    pass
    nobody = Endpoint.discover(url=f"http://127.0.0.1:{free_port()}", token="t")
    with pytest.raises(DaemonUnreachable):
        await trio.to_thread.run_sync(Client(nobody).status)
    with pytest.raises(DaemonUnreachable):
        await trio.to_thread.run_sync(asyncio.run, AsyncioClient(nobody).status())


async def test_clients_on_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    with trio.fail_after(60):
        async with dc_daemon(tmp_path, listen=f"unix:{sock}") as (config, _dc):
            reply = await trio.to_thread.run_sync(
                lambda: Client.discover(config).invoke("help.GetConfig")
            )
            check_config(reply)
            aio = await trio.to_thread.run_sync(
                asyncio.run, AsyncioClient.discover(config).resolve("@mtpoold_news")
            )
            check_resolve(aio)
            async with TrioClient.connect(config) as client:
                check_messages(await client.get_messages("@mtpoold_news", [1, 99]))


def test_discover_follows_the_cli_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "token").write_text("tok-1\n")
    config = tmp_path / "mtpoold.toml"
    config.write_text('[daemon]\nlisten = "0.0.0.0:9001"\nstate_dir = "state"\n')
    monkeypatch.chdir(tmp_path)
    found = Endpoint.discover()
    assert (found.target.host, found.target.port, found.token) == ("127.0.0.1", 9001, "tok-1")
    monkeypatch.setenv("MTPOOLD_URL", "unix:/run/x.sock")
    assert Endpoint.discover().target.path == "/run/x.sock"
    assert Endpoint.discover(url="http://h:1", token="t").target.port == 1
    (tmp_path / "other").write_text("tok-2")
    assert Endpoint.discover(token_file=tmp_path / "other").token == "tok-2"


async def test_a_call_given_up_by_its_caller_cancels_its_job_in_the_daemon(tmp_path: Path) -> None:
    """Trio: a cancelled call sends ``cancel``; asyncio and blocking: the connection closes
    (a timeout, a cancelled task), which cancels the job as a websocket close does."""
    from mtpoold.testing.dc import blackhole

    async def until_no_job_runs(client: TrioClient) -> None:
        """Poll the daemon's ``status`` (another process: no event to wait on)."""
        while (await client.status())["jobs_in_flight"]:  # noqa: ASYNC110 - another process
            await trio.sleep(0.05)

    with trio.fail_after(60):
        async with dc_daemon(tmp_path) as (config, dc):
            rule = dc.faults.add(blackhole(), method="help.GetNearestDc", times=3)
            async with TrioClient.connect(config) as client:
                with trio.move_on_after(0.5):
                    await client.invoke("help.GetNearestDc")
                await until_no_job_runs(client)
                with pytest.raises(DaemonUnreachable, match="no reply"):
                    await trio.to_thread.run_sync(
                        lambda: Client.discover(config).call(
                            "invoke", {"method": "help.GetNearestDc"}, timeout_s=0.5
                        )
                    )
                await until_no_job_runs(client)

                async def given_up() -> None:
                    job = asyncio.ensure_future(
                        AsyncioClient.discover(config).invoke("help.GetNearestDc")
                    )
                    await asyncio.sleep(0.5)
                    job.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await job

                await trio.to_thread.run_sync(asyncio.run, given_up())
                await until_no_job_runs(client)
                assert rule.remaining == 0  # each of the three reached the DC


def test_discover_prefers_where_the_running_daemon_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the CLI: ``daemon.json`` names where the running daemon listens (its
    ``daemon.listen`` was edited since it started); without a live daemon, the file's."""
    import os

    from mtpoold._daemonfile import remove_daemon_file, write_daemon_file
    from mtpoold._token import ensure_token

    for name in ("MTPOOLD_URL", "MTPOOLD_TOKEN_FILE", "MTPOOLD_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "mtpoold.toml"
    config.write_text('[daemon]\nlisten = "127.0.0.1:1111"\nstate_dir = "state"\n')
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    token, _ = ensure_token(state / "token")
    assert Endpoint.discover(config).target.port == 1111
    write_daemon_file(state, "127.0.0.1:2222", pid=os.getpid())  # this process: alive
    endpoint = Endpoint.discover(config)
    assert (endpoint.target.port, endpoint.token) == (2222, token)
    remove_daemon_file(state, pid=os.getpid())
    assert Endpoint.discover(config).target.port == 1111


#: Numbers a caller may pass that JSON cannot carry, or that overflow a float (shared case 002).
HUGE_MS = 10**400
NOT_JSON: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    ({}, {"deadline_ms": float("inf")}, "params.options.deadline_ms: inf is not a JSON number"),
    ({}, {"deadline_ms": float("nan")}, "params.options.deadline_ms: nan is not a JSON number"),
    ({}, {"max_age_s": float("inf")}, "params.options.max_age_s: inf is not a JSON number"),
    ({"limit": float("-inf")}, {}, "params.args.limit: -inf is not a JSON number"),
]


def _check_invalid(exc: RpcError, message: str) -> None:
    assert (exc.code, exc.error_class) == (-32602, "INVALID_ARGUMENT"), exc
    assert exc.message.startswith(message), exc.message


def blocking_numbers(config: Path) -> list[RpcError]:
    client = Client.discover(config)
    errors: list[RpcError] = []
    for args, options in [({}, {"deadline_ms": HUGE_MS}), *[(a, o) for a, o, _ in NOT_JSON]]:
        try:
            client.invoke("help.GetConfig", args, **options)
        except RpcError as exc:
            errors.append(exc)
    return errors


async def asyncio_numbers(config: Path) -> list[RpcError]:
    client = AsyncioClient.discover(config)
    errors: list[RpcError] = []
    for args, options in [({}, {"deadline_ms": HUGE_MS}), *[(a, o) for a, o, _ in NOT_JSON]]:
        try:
            await client.invoke("help.GetConfig", args, **options)
        except RpcError as exc:
            errors.append(exc)
    return errors


async def test_numbers_of_any_size_are_invalid_argument_in_every_flavour(tmp_path: Path) -> None:
    # shared case 002's kind at the client door: a 400-digit deadline_ms is the daemon's
    # INVALID_ARGUMENT (no OverflowError computing the wait); NaN or an infinity is refused
    # before sending as INVALID_ARGUMENT naming the member (no ValueError, no OverflowError,
    # and a websocket is not lost to the daemon's PARSE_ERROR for a frame it cannot read)
    huge = "params.options.deadline_ms: expected at most 2**53"
    with trio.fail_after(90):
        async with dc_daemon(tmp_path) as (config, _dc):
            for errors in (
                await trio.to_thread.run_sync(blocking_numbers, config),
                await trio.to_thread.run_sync(asyncio.run, asyncio_numbers(config)),
            ):
                assert len(errors) == 1 + len(NOT_JSON)
                _check_invalid(errors[0], huge)
                for exc, (_, _, message) in zip(errors[1:], NOT_JSON, strict=True):
                    _check_invalid(exc, message)
            async with TrioClient.connect(config) as client:
                with pytest.raises(RpcError) as info:
                    await client.invoke("help.GetConfig", deadline_ms=HUGE_MS)
                _check_invalid(info.value, huge)
                for args, options, message in NOT_JSON:
                    with pytest.raises(RpcError) as info:
                        await client.invoke("help.GetConfig", args, **options)
                    _check_invalid(info.value, message)
                check_config(await client.invoke("help.GetConfig"))  # the connection lives on
