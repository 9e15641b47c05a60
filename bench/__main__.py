"""`python -m bench NAME [--size tiny|small|large]`: run the benchmark module bench/NAME.py.

`tiny` runs a bench end to end in seconds so none rots (tests/test_bench.py runs each);
its figures mean nothing and are printed, never written to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path


def main() -> None:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name not in {"common", "__main__"})
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=names)
    parser.add_argument("--size", choices=["tiny", "small", "large"], default="small")
    args = parser.parse_args()
    from bench import common

    common.RECORD = args.size != "tiny"
    module = importlib.import_module(f"bench.{args.name}")
    module.run(args.size)


if __name__ == "__main__":
    main()
