"""Sets builds of the CUDA core side by side from their `check_core.py --bench` logs.

    python3 tests/cuda_core/compare_bench.py A=a1.txt B=b1.txt B=b2.txt A=a2.txt

Each NAME=FILE is one run of build NAME; a build's figure is the median of its runs (runs in the
order A B .. B A cancel a drift of the machine's clocks). Prints a markdown table per timing:
forward, backward input, backward weight and forward+backward, ms, one column per build.
"""

import re
import statistics
import sys

LINE = re.compile(
    r"bench (?P<config>\S+) torch\.(?P<dtype>\S+)\s+tf32=(?P<tf32>\d) fwd (?P<fwd>[\d.]+)"
    r".*fwd\+bwd (?P<fwd_bwd>[\d.]+) .*bwd input (?P<input>[\d.]+) weight (?P<weight>[\d.]+)"
)
TIMINGS = (
    ("fwd", "forward"),
    ("input", "backward input"),
    ("weight", "backward weight"),
    ("fwd_bwd", "forward+backward"),
)


def dtype_name(dtype, tf32):
    if dtype == "float32":
        return "TF32" if tf32 == "1" else "fp32"
    return {"float16": "fp16", "bfloat16": "bf16"}.get(dtype, dtype)


def read(path):
    """{(config, dtype): {timing: ms}} of one log."""
    rows = {}
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                key = (m["config"], dtype_name(m["dtype"], m["tf32"]))
                rows[key] = {t: float(m[t]) for t, _ in TIMINGS}
    return rows


def main(argv):
    runs = {}  # build -> list of logs' rows, in the order given
    for arg in argv:
        name, _, path = arg.partition("=")
        if not path:
            sys.exit(f"expected NAME=FILE, got {arg!r}")
        runs.setdefault(name, []).append(read(path))
    builds = list(runs)
    keys = [k for k in runs[builds[0]][0] if all(k in r for b in builds for r in runs[b])]
    for timing, title in TIMINGS:
        print(f"\n{title}, ms (median of each build's runs)\n")
        print("| config | dtype | " + " | ".join(builds) + " |")
        print("|---|---|" + "--:|" * len(builds))
        for key in keys:
            cells = [statistics.median(r[key][timing] for r in runs[b]) for b in builds]
            print(f"| {key[0]} | {key[1]} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
