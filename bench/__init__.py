"""mtpoold's benchmark: ``python -m bench`` (see ``bench/RESULTS.md``).

One module per scenario, each with ``NAME``, ``TITLE`` and ``run(*, quick) -> Report``:
`bench.gate` (1), `bench.warm` (2), `bench.daemon` (3), `bench.scale` (4), `bench.bridge` (5).
Every comparison is measured in the same run, side by side, and reported as a ratio.
"""
