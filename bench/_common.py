"""Shared pieces of the benchmark: reports, statistics, machine facts, child processes."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGES: Final = (
    "mtpoold",
    "trio",
    "trio-asyncio",
    "Telethon",
    "cryptg",
    "python-socks",
    "pproxy",
    "trio-websocket",
    "attrs",
    "cattrs",
    "redis",
    "psutil",
    "pyinstrument",
    "py-spy",
    "rich",
)


# --- reports -------------------------------------------------------------------------------------


@attrs.define
class Row:
    """One line of the summary table.

    ``value`` is mtpoold's figure, ``baseline`` the comparison's (PHP system, per-job
    clients, in-process, native asyncio ...), ``ratio`` how they compare, ``met`` whether the
    goal holds (None: no goal).
    """

    metric: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: bool | None = None


@attrs.define
class Report:
    """What one scenario produced; rendered to the console and to RESULTS.md."""

    name: str
    title: str
    rows: list[Row] = attrs.field(factory=list)
    details: list[str] = attrs.field(factory=list)  # markdown, shown in RESULTS.md only
    notes: list[str] = attrs.field(factory=list)  # markdown bullet texts
    status: str = "ok"  # "ok", "not run: <why>", "error: <what>"
    seconds: float = 0.0
    #: Measured figures, already formatted, that the scenario's ``ANALYSIS`` template names
    #: as ``{key}`` (`render_analysis`): the prose carries no figure of its own.
    values: dict[str, str] = attrs.field(factory=dict)
    #: ``os.getloadavg()`` when the scenario started and when it ended (1, 5, 15 min).
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None

    def load_line(self) -> str:
        """``"load average 0.52 / 0.61 / 0.40 before, 1.95 / 0.98 / 0.52 after"`` or ``""``."""
        if self.load_before is None or self.load_after is None:
            return ""

        def fmt(load: tuple[float, float, float]) -> str:
            return " / ".join(f"{x:.2f}" for x in load)

        return (
            f"load average (1 / 5 / 15 min) {fmt(self.load_before)} before, "
            f"{fmt(self.load_after)} after"
        )

    def row(self, *args: Any, **kwargs: Any) -> Row:
        r = Row(*args, **kwargs)
        self.rows.append(r)
        return r


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"n/a ({key} not measured in this run)"


def render_analysis(template: str, values: dict[str, str]) -> str:
    """A scenario's ``ANALYSIS`` with every ``{key}`` replaced by ``values[key]``.

    The templates hold no figure of their own (tests/test_bench_prose.py checks that no digit
    stands outside a ``{placeholder}`` or a backtick span), so every number in RESULTS.md's
    prose comes from the run it describes. A key the run did not fill reads "n/a (...)".
    """
    return template.format_map(_Missing(values))


# --- statistics -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; nan for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all equal, 1/n when one has all."""
    if not values:
        return math.nan
    total = sum(values)
    squares = sum(v * v for v in values)
    return 1.0 if squares == 0 else total * total / (len(values) * squares)


def ms(seconds: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.{digits}f} ms"


def ratio(a: float, b: float, digits: int = 1) -> str:
    if b == 0 or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.{digits}f}x"


# --- machine --------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return math.nan


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _command_output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, str]:
    """Where the figures come from."""
    redis_v = _command_output(["redis-server", "--version"]).split(" ")
    commit = _command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _command_output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "mtpoold"])
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{_ram_gib():.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mtpoold commit": commit + (" (+ uncommitted changes in mtpoold/)" if dirty else ""),
        "redis-server": next((p[2:] for p in redis_v if p.startswith("v=")), "not installed"),
    }
    for dist in PACKAGES:
        facts[dist] = _version(dist)
    return facts


# --- memory and cpu ------------------------------------------------------------------------------


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (default: this one), from /proc."""
    statm = Path(f"/proc/{pid or 'self'}/statm").read_text().split()
    return int(statm[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --- children -------------------------------------------------------------------------------------


def child_command(target: str, **kwargs: Any) -> list[str]:
    """The command that runs ``module:function(**kwargs)`` in a fresh interpreter."""
    return [sys.executable, "-m", "bench._child", target, json.dumps(kwargs)]


def run_child(target: str, *, timeout_s: float = 600.0, **kwargs: Any) -> Any:
    """Run ``module:function(**kwargs)`` in a fresh interpreter and return its JSON result.

    Raises:
        RuntimeError: with the child's stderr tail if it fails.
    """
    proc = subprocess.run(
        child_command(target, **kwargs),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{target} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return parse_child_output(proc.stdout)


def parse_child_output(stdout: str) -> Any:
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH-RESULT "):
            return json.loads(line[len("BENCH-RESULT ") :])
    raise RuntimeError(f"child printed no result: {stdout[-2000:]!r}")
