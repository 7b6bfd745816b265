"""bench/RESULTS.md's prose carries no figure that did not come from the run it describes.

Each scenario's ``ANALYSIS`` is a template: figures enter it only as ``{placeholders}`` filled
from `bench._common.Report.values` by `bench._common.render_analysis`. A digit anywhere else in
a template (outside a backtick code span) is a figure written by hand for some earlier run.
"""

from __future__ import annotations

import importlib
import re
import string

import pytest

from bench.__main__ import SCENARIOS
from bench._common import Report, render_analysis

_CODE = re.compile(r"`[^`]*`")


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("name", SCENARIOS)
def test_analysis_has_no_hand_written_figures(name: str) -> None:
    template: str = getattr(importlib.import_module(f"bench.{name}"), "ANALYSIS", "")
    prose = _CODE.sub("", re.sub(r"\{[a-z_0-9]+\}", "", template))
    figures = re.findall(r".{0,20}(?<!\w)\d[\d,.]*.{0,10}", prose)
    assert not figures, f"bench/{name}.py ANALYSIS has figures: {figures}"


def test_render_analysis_fills_and_names_the_missing() -> None:
    text = render_analysis("p50 {p50}, p99 {p99}", {"p50": "1.2 ms"})
    assert text == "p50 1.2 ms, p99 n/a (p99 not measured in this run)"


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "economy"])
def test_each_placeholder_is_filled_by_its_scenario(name: str) -> None:
    """Every ``{key}`` of a template is a key its ``run`` puts into ``report.values``."""
    mod = importlib.import_module(f"bench.{name}")
    source = importlib.util.find_spec(f"bench.{name}").loader.get_source(f"bench.{name}")  # type: ignore[union-attr]
    assert source is not None
    filled = set(re.findall(r"^\s+([a-z_0-9]+)=", source, re.M))
    missing = _fields(mod.ANALYSIS) - filled
    assert not missing, f"bench/{name}.py ANALYSIS names unfilled {sorted(missing)}"


def test_load_line() -> None:
    rep = Report("x", "X", load_before=(0.5, 0.25, 0.125), load_after=(2.0, 1.0, 0.5))
    assert rep.load_line() == (
        "load average (1 / 5 / 15 min) 0.50 / 0.25 / 0.12 before, 2.00 / 1.00 / 0.50 after"
    )
