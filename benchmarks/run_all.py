"""Run every benchmark (kernel throughput, daemon round trip, upload, linear-algebra time to
1 %, TNGD step, paper-scale iteration) and print one table of ratios to the references measured
in the same run. ``make bench`` runs this; about 4-6 minutes (the paper-scale row alone takes
1-2).

Each benchmark is also a script of its own (``--help`` for its options). ``--write-docs``
replaces the results block of docs/performance.md with this run's table.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

import kernel_throughput
import linalg_ops
import paper_scale
import round_trip
import tngd_step
import upload
from _common import Row, base_parser, print_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
BEGIN, END = "<!-- results: begin (benchmarks/run_all.py --write-docs) -->", "<!-- results: end -->"


def markdown(rows: list[Row], stamp: str) -> str:
    """The results block of docs/performance.md: this run's rows, and when and where."""
    lines = [BEGIN, "", stamp, "",
             "| benchmark | case | ratio | target | met | foreign | steal |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.benchmark} | {row.case} | {row.ratio:.3g} | {row.target_text} | "
                     f"{row.met} | {row.foreign_cores:.2f} | {row.steal_cores:.2f} |")
    return "\n".join([*lines, "", END])


def write_docs(rows: list[Row], stamp: str) -> None:
    text = DOC.read_text()
    block = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not block.search(text):
        raise SystemExit(f"{DOC} has no results block ({BEGIN} ... {END})")
    DOC.write_text(block.sub(lambda _: markdown(rows, stamp), text))
    print(f"wrote the results block of {DOC}")


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the results block of docs/performance.md with this run's")
    args = parser.parse_args(argv)
    import numpy as np

    started = time.perf_counter()
    machine = (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
               f"numpy {np.__version__}")
    print(f"{datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"{machine}", flush=True)
    rows = []
    for name, module in (("kernel throughput", kernel_throughput), ("round trip", round_trip),
                         ("upload", upload), ("linear algebra", linalg_ops),
                         ("tngd step", tngd_step), ("paper scale", paper_scale)):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        # the paper-scale row is not repeated on a busy machine: one attempt takes a minute
        rows += module.measure(retries=0 if module is paper_scale else args.retries)
    print_table(rows)
    missed = [row for row in rows if row.met == "NO"]
    elapsed = time.perf_counter() - started
    print(f"{len(rows) - len(missed)} of {len(rows)} rows meet their target or have none; "
          f"{elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump([{**asdict(row), "ratio": row.ratio, "met": row.met} for row in rows], out,
                      indent=1)
    if args.write_docs:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        write_docs(rows, f"Measured {when} by `benchmarks/run_all.py --write-docs` "
                         f"({elapsed:.0f} s; {machine}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
