"""``[cluster]``: its keys, their checks, the password file, and the single-node path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtpoold._clusterrun import read_password_file
from mtpoold._config import ClusterConfig, parse_config
from mtpoold._errors import ConfigError
from mtpoold._startup import startup_problems


def _problems(cluster: object) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"cluster": cluster}, base_dir=Path("/etc/mtpoold"))
    return caught.value.problems


def test_cluster_absent_is_one_node() -> None:
    assert parse_config({}, base_dir=Path("/")).cluster is None


def test_cluster_defaults() -> None:
    config = parse_config({"cluster": {"redis_url": "redis://10.0.0.5:6379/2"}}, base_dir=Path("/"))
    cluster = config.cluster
    assert cluster == ClusterConfig(redis_url="redis://10.0.0.5:6379/2")
    assert cluster.lease_s == 15.0
    assert cluster.renew_interval_s == 5.0
    assert cluster.disconnect_delay_s == 15.0
    assert cluster.key_prefix == "mtpoold:"
    assert cluster.php_keys is False and cluster.php_prefix == ""
    assert cluster.op_timeout_s == 1.0
    assert cluster.password_file is None
    host = socket.gethostname()
    assert cluster.node == host or cluster.node.replace("-", "") in host.replace("-", "")


def test_cluster_every_key() -> None:
    config = parse_config(
        {
            "cluster": {
                "redis_url": "unix:///run/redis/redis.sock",
                "password_file": "redis.pass",
                "node": "web-2.eu",
                "lease_s": 9,
                "key_prefix": "fleet1:",
                "php_keys": True,
                "php_prefix": "laravel_cache:",
                "op_timeout_s": 0.5,
            }
        },
        base_dir=Path("/etc/mtpoold"),
    )
    cluster = config.cluster
    assert cluster is not None
    assert cluster.password_file == "/etc/mtpoold/redis.pass"  # relative to the config file
    assert (cluster.node, cluster.lease_s, cluster.key_prefix) == ("web-2.eu", 9, "fleet1:")
    assert cluster.php_keys and cluster.php_prefix == "laravel_cache:"


def test_cluster_problems_every_one_with_its_key_path() -> None:
    problems = _problems(
        {
            "redis_url": "http://10.0.0.5",
            "node": "a b",
            "lease": 3,
            "lease_s": 1,
            "key_prefix": "",
            "op_timeout_s": 0,
        }
    )
    assert "cluster.lease: unknown key; did you mean lease_s?" in problems
    assert any(
        p.startswith('cluster.redis_url: expected "redis://host:port[/db]"') for p in problems
    )
    assert any(p.startswith("cluster.node: expected 1-63 letters") for p in problems)
    assert "cluster.lease_s: expected seconds, 3..600, got 1" in problems
    assert any(p.startswith("cluster.key_prefix:") for p in problems)
    assert any(p.startswith("cluster.op_timeout_s:") for p in problems)


def test_cluster_redis_url_is_required() -> None:
    assert _problems({}) == ("cluster.redis_url: missing",)


def test_cluster_section_name_did_you_mean() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"clustr": {"redis_url": "redis://h:1"}}, base_dir=Path("/"))
    assert caught.value.problems == ("clustr: unknown key; did you mean cluster?",)


def test_a_password_in_the_url_is_refused_and_never_echoed() -> None:
    problems = _problems({"redis_url": "redis://:hunter2@10.0.0.5:6379"})
    assert len(problems) == 1 and "password_file" in problems[0]
    assert "hunter2" not in repr(problems)


def test_op_timeout_must_fit_in_a_renew_interval() -> None:
    problems = _problems({"redis_url": "redis://h:1", "lease_s": 3, "op_timeout_s": 1})
    assert problems == ("cluster.op_timeout_s: expected less than lease_s / 3 (1 s), got 1",)


def test_password_file_is_read_tightened_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "redis.pass"
    path.write_text("s3cret-pw\n")
    path.chmod(0o644)
    assert read_password_file(str(path)) == "s3cret-pw"
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError) as caught:
        read_password_file(str(tmp_path / "missing"))
    assert caught.value.problems[0].startswith("cluster.password_file: cannot read ")
    path.write_text("")
    with pytest.raises(ConfigError) as caught:
        read_password_file(str(path))
    assert "is empty" in caught.value.problems[0]


def test_startup_problems_name_an_unreadable_password_file(tmp_path: Path) -> None:
    config = parse_config(
        {"cluster": {"redis_url": "redis://127.0.0.1:1", "password_file": "nope"}},
        base_dir=tmp_path,
    )
    problems = startup_problems(config)
    assert problems == [
        f"cluster.password_file: cannot read {tmp_path / 'nope'} (No such file or directory)"
    ]


def test_without_cluster_no_redis_is_imported(tmp_path: Path) -> None:
    """The single-node path imports neither redis nor the cluster modules."""
    probe = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import trio
        from mtpoold._compose import open_pool
        from mtpoold._config import parse_config
        sys.path.insert(0, "tests")
        from _fakeclient import World, make_config

        config = make_config(Path(sys.argv[1]), direct={"interval_s": 0})

        async def main():
            async with open_pool(config, client_factory=World().factory(),
                                 lock_sessions=False) as pool:
                await pool.invoke("help.GetConfig", {})

        trio.run(main)
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] == "redis" or m.startswith("mtpoold._cluster")
                        or m in ("mtpoold._redislink", "mtpoold._leases"))
        print(loaded)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]"], proc.stdout


def test_a_url_the_redis_link_would_refuse_is_a_config_problem() -> None:
    """What passed the config's pattern but not the link's rules failed only at start:
    ``rediss://`` (no TLS support), a port out of range, a unix URL with a stray query."""
    for url, expected in (
        ("rediss://10.0.0.5:6379", "scheme must be redis:// or unix://"),
        ("redis://10.0.0.5:99999", "malformed"),
        ("unix:///run/redis.sock?x=1", "unix:// takes only ?db=N"),
    ):
        problems = _problems({"redis_url": url})
        assert len(problems) == 1 and problems[0].startswith("cluster.redis_url: redis url: ")
        assert expected in problems[0] and url in problems[0]
    config = parse_config({"cluster": {"redis_url": "unix:///run/r.sock?db=2"}}, base_dir=Path("/"))
    assert config.cluster is not None and config.cluster.redis_url == "unix:///run/r.sock?db=2"
