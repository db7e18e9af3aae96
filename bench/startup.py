"""How long `edgepack --help` takes, beside a bare `python -c pass` measured in the same run.

    python bench/startup.py [--runs 20]

Target: `edgepack --help` under 0.5 s on the project's machines. The interpreter's own start-up is
printed beside it so a loaded machine shows up as such rather than as a regression.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    help_cmd = [sys.executable, "-m", "edgepack", "--help"]
    bare_cmd = [sys.executable, "-c", "pass"]
    helps, bares = [], []
    timed(help_cmd)  # warm the page cache and .pyc files
    for _ in range(args.runs):  # interleaved: both see the same machine load
        helps.append(timed(help_cmd))
        bares.append(timed(bare_cmd))
    h, b = statistics.median(helps), statistics.median(bares)
    print(f"edgepack --help   median {h * 1e3:7.1f} ms  (min {min(helps) * 1e3:.1f})")
    print(f"python -c pass    median {b * 1e3:7.1f} ms  (min {min(bares) * 1e3:.1f})")
    print(f"ratio {h / b:.2f}x; edgepack's own share {(h - b) * 1e3:.1f} ms; "
          f"target < 500 ms: {'met' if h < 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
