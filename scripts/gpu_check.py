#!/usr/bin/env python
"""The GPU check of issue 13: Fast-Rainbow learner, replay, env and DDP on this machine.

    python scripts/gpu_check.py [--json gpu.json] [--small] [--no-ddp]

About five minutes on a GPU machine (batch 512, 64 envs); runs on a CPU too, at small sizes.
Prints one table and writes the numbers as JSON. What it measures:
``ife_platform/bench/device.py``; where the numbers go: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the check, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="gpu_check.json", help="where to write the results")
    parser.add_argument("--small", action="store_true", help="CPU-sized budgets even on a GPU")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-device DDP run")
    parser.add_argument("--game", default="pong")
    opts = parser.parse_args(argv)

    from ife_platform.bench.common import quiet_lightning
    from ife_platform.bench.device import device_check, format_device_report

    quiet_lightning()
    warnings.filterwarnings("ignore", category=FutureWarning)
    results = device_check(small=True if opts.small else None, game=opts.game, ddp=not opts.no_ddp)
    print(format_device_report(results))
    Path(opts.json).write_text(json.dumps(results, indent=2, default=str))
    print(f"results written to {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
