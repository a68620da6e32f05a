"""Run every benchmark (kernel throughput, daemon round trip, upload, linear-algebra time to 1 %)
and print one table of ratios to the references measured in the same run. ``make bench`` runs
this; about 1-2 minutes.

Each benchmark is also a script of its own (``--help`` for its options).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from dataclasses import asdict

import kernel_throughput
import linalg_ops
import round_trip
import upload
from _common import base_parser, print_table


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    import numpy as np

    started = time.perf_counter()
    print(f"{datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"{os.cpu_count()} CPUs  Python {platform.python_version()}  numpy {np.__version__}",
          flush=True)
    rows = []
    for name, module in (("kernel throughput", kernel_throughput), ("round trip", round_trip),
                         ("upload", upload), ("linear algebra", linalg_ops)):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += module.measure(retries=args.retries)
    print_table(rows)
    missed = [row for row in rows if row.met == "NO"]
    print(f"{len(rows) - len(missed)} of {len(rows)} rows meet their target or have none; "
          f"{time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump([{**asdict(row), "ratio": row.ratio, "met": row.met} for row in rows], out,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
