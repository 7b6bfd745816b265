"""``python -m bench._child module:function JSON``: run one measurement in a fresh interpreter.

The function's JSON-serialisable return value is printed as ``BENCH-RESULT <json>``.
"""

from __future__ import annotations

import importlib
import json
import sys


def main() -> int:
    target, args = sys.argv[1], json.loads(sys.argv[2])
    module, _, func = target.partition(":")
    result = getattr(importlib.import_module(module), func)(**args)
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
