"""``python -m bench [--only NAME ...] [--quick] [--write | --no-write]``.

Runs the scenarios, prints one table and (for a full run, or with ``--write``) rewrites
``bench/RESULTS.md`` with the figures, ratios, goals and the machine they came from. With
``--only NAME --write`` only those scenarios' summary rows and sections are replaced (the
others stay as their last run wrote them; the section says it was written alone).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._common import Report, machine, render_analysis

SCENARIOS = ("gate", "warm", "daemon", "scale", "bridge", "economy", "cluster")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only this scenario (repeatable, comma-separated): {', '.join(SCENARIOS)}",
    )
    p.add_argument("--quick", action="store_true", help="short runs (about 3 minutes in all)")
    w = p.add_mutually_exclusive_group()
    w.add_argument(
        "--write",
        dest="write",
        action="store_true",
        default=None,
        help="rewrite bench/RESULTS.md (default for a full run)",
    )
    w.add_argument(
        "--no-write",
        dest="write",
        action="store_false",
        help="only print (default with --only or --quick)",
    )
    p.add_argument("--output", type=Path, default=RESULTS, help="where to write the results")
    return p


def _met(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[met]


def console_table(reports: list[Report]) -> Table:
    table = Table(title="mtpoold benchmark", show_lines=False)
    for col in ("scenario", "metric", "mtpoold", "baseline", "ratio", "goal", "met"):
        table.add_column(col, overflow="fold")
    for rep in reports:
        if rep.status != "ok":
            table.add_row(rep.name, escape(rep.status), "", "", "", "", "")
            continue
        for i, r in enumerate(rep.rows):
            style = "red" if r.met is False else None
            table.add_row(
                *(
                    escape(c)
                    for c in (
                        rep.name if i == 0 else "",
                        r.metric,
                        r.value,
                        r.baseline,
                        r.ratio,
                        r.goal,
                        _met(r.met),
                    )
                ),
                style=style,
            )
        table.add_section()
    return table


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(reports: list[Report], facts: dict[str, str], *, quick: bool, total_s: float) -> str:
    out = [
        "# mtpoold benchmark results",
        "",
        "Written by `python -m bench` — do not edit by hand: the prose comes from the scenario "
        "modules in `bench/` (their `ANALYSIS`), the figures from the run below. "
        + ("**Quick run** (short durations): indicative only. " if quick else "")
        + f"The whole run took {total_s / 60:.1f} min.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    out += [f"| {k} | {_md(v)} |" for k, v in facts.items()]
    out += [
        "",
        "## Summary",
        "",
        "`mtpoold` is mtpoold's figure, `baseline` the comparison measured in the same run "
        "(named per scenario below). A **NO** in `met` is a missed goal; see the scenario's "
        "analysis for by how much and why.",
        "",
        "| scenario | metric | mtpoold | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for rep in reports:
        if rep.status != "ok":
            out.append(f"| {rep.name} | {_md(rep.status)} | | | | | |")
            continue
        for r in rep.rows:
            out.append(
                f"| {rep.name} | {_md(r.metric)} | {_md(r.value)} | {_md(r.baseline)} "
                f"| {_md(r.ratio)} | {_md(r.goal)} "
                f"| {'**NO**' if r.met is False else _met(r.met)} |"
            )
    for rep in reports:
        mod = importlib.import_module(f"bench.{rep.name}")
        load = rep.load_line()
        out += [
            "",
            f"## {rep.title}",
            "",
            f"_{rep.seconds:.0f} s of the run" + (f"; {load}" if load else "") + "._",
            "",
        ]
        doc = (mod.__doc__ or "").strip().split("\n\n", 1)
        if len(doc) > 1:
            out += [doc[1].strip(), ""]
        if rep.status != "ok":
            out += [f"**{rep.status}**", ""]
        out += rep.details
        if rep.notes:
            out += [f"- {n}" for n in rep.notes] + [""]
        analysis = getattr(mod, "ANALYSIS", "").strip()
        if analysis:
            out += ["### Analysis", "", render_analysis(analysis, rep.values), ""]
    howto = Path(__file__).resolve().parent / "HOWTO.md"
    if howto.exists():
        out += ["", howto.read_text().strip(), ""]
    return "\n".join(out).rstrip() + "\n"


def _blocks(text: str) -> list[list[str]]:
    """``text`` cut before every ``## `` heading: [preamble lines, section lines, ...]."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("## "):
            blocks.append([])
        blocks[-1].append(line)
    return blocks


def splice(
    existing: str, fresh: str, reports: list[Report], facts: dict[str, str], *, quick: bool
) -> str:
    """``existing`` RESULTS.md with the summary rows and sections of ``reports`` replaced by
    those of ``fresh`` (``markdown`` of these reports alone) and the how-to refreshed.

    Other scenarios' rows and sections are left as they were. A section not in ``existing``
    goes before the how-to; each spliced section says when and from which commit it was
    written, since the machine table above belongs to the last full run.
    """
    old, new = _blocks(existing), _blocks(fresh)

    def find(blocks: list[list[str]], heading: str) -> int | None:
        return next((i for i, b in enumerate(blocks) if b and b[0] == heading), None)

    summary_old, summary_new = find(old, "## Summary"), find(new, "## Summary")
    if summary_old is None or summary_new is None:
        return fresh  # not a file this tool wrote: start over
    names = {f"| {r.name} |" for r in reports}

    def ours(line: str) -> bool:
        return any(line.startswith(n) for n in names)

    rows = [line for line in new[summary_new] if ours(line)]
    block = [line for line in old[summary_old] if not ours(line)]
    last_row = max((i for i, line in enumerate(block) if line.startswith("|")), default=-1)
    old[summary_old] = block[: last_row + 1] + rows + block[last_row + 1 :]
    stamp = (
        ("_**Quick run**: indicative only._ " if quick else "")
        + f"_Written alone (`python -m bench --only`) on {facts.get('date', '?')}, mtpoold "
        f"commit {facts.get('mtpoold commit', '?')}; the machine table above is the last "
        "full run's._"
    )
    howto_new = next((b for b in new if b and b[0] == "## Running the benchmark"), None)
    for rep in reports:
        heading = f"## {rep.title}"
        i_new = find(new, heading)
        if i_new is None:
            continue
        section = new[i_new][:]
        section[3:3] = ["", stamp]
        i_old = find(old, heading)
        if i_old is not None:
            old[i_old] = section
        else:
            at = find(old, "## Running the benchmark")
            old.insert(len(old) if at is None else at, section)
    at = find(old, "## Running the benchmark")
    if howto_new is not None:
        if at is None:
            old.append(howto_new)
        else:
            old[at] = howto_new
    return "\n".join(line for b in old for line in b).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = [n.strip() for chunk in args.only for n in chunk.split(",") if n.strip()]
    unknown = [n for n in only if n not in SCENARIOS]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    names = [n for n in SCENARIOS if not only or n in only]
    write = args.write if args.write is not None else not (only or args.quick)
    console = Console() if sys.stdout.isatty() else Console(width=180)
    reports: list[Report] = []
    t_all = time.perf_counter()
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        console.print(f"[bold]{escape(mod.TITLE)}[/bold] ...")
        t = time.perf_counter()
        load_before = os.getloadavg()
        try:
            report = mod.run(quick=args.quick)
        except Exception as exc:  # one broken scenario must not lose the others' figures
            traceback.print_exc()
            report = Report(name, mod.TITLE, status=f"error: {type(exc).__name__}: {exc}"[:300])
        report.seconds = time.perf_counter() - t
        report.load_before, report.load_after = load_before, os.getloadavg()
        console.print(f"  done in {report.seconds:.0f} s; {escape(report.load_line())}")
        reports.append(report)
    total = time.perf_counter() - t_all
    console.print(console_table(reports))
    console.print(f"total {total / 60:.1f} min")
    if write:
        facts = machine()
        text = markdown(reports, facts, quick=args.quick, total_s=total)
        if only and args.output.exists():
            text = splice(args.output.read_text(), text, reports, facts, quick=args.quick)
        args.output.write_text(text)
        console.print(f"wrote {args.output}")
    return 0 if all(r.status == "ok" for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
