"""Time to parse MQ2008 S1..S5 with ``read_letor`` next to sklearn's bare parser.

Run: ``python -m bench.parse_speed [--root DIR] [--repeat N]``. The datasets folder is
``$LTR_DATASETS_DIR`` or ``../shared/datasets`` beside the repository.

Target (BENCHMARKS.md): all of MQ2008 (S1..S5) read by ``read_letor`` in under 5 s, best of
N; the sklearn parser's time in the same run is printed beside it. Exits 1 when missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench._targets import Targets

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_SECONDS = 5.0


def default_root() -> Path:
    env = os.environ.get("LTR_DATASETS_DIR")
    base = Path(env) if env else (REPO_ROOT / ".." / "shared" / "datasets").resolve()
    return base / "mq2008"


def best_of(repeat: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=default_root(), help="folder with S1..S5.txt")
    parser.add_argument("--repeat", type=int, default=5, help="runs per method (best is shown)")
    args = parser.parse_args(argv)
    files = [args.root / f"S{i}.txt" for i in range(1, 6)]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        print(f"MQ2008 not found: {', '.join(absent)}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    from sklearn.datasets import load_svmlight_file

    from ltr.data.letor import read_letor

    import_s = time.perf_counter() - start

    def ours() -> None:
        for f in files:
            read_letor(f)

    def bare() -> None:
        for f in files:
            load_svmlight_file(str(f), query_id=True, zero_based=False)

    rows = sum(read_letor(f).n_docs for f in files)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    t_ours = best_of(args.repeat, ours)
    t_bare = best_of(args.repeat, bare)
    print(
        f"MQ2008 S1..S5: {len(files)} files, {rows} rows, {size_mb:.1f} MB, best of {args.repeat}"
    )
    print(f"{'method':<40} {'seconds':>8} {'rows/s':>10}")
    print(f"{'ltr read_letor (validated, doc ids)':<40} {t_ours:8.3f} {rows / t_ours:10.0f}")
    print(f"{'sklearn load_svmlight_file (bare)':<40} {t_bare:8.3f} {rows / t_bare:10.0f}")
    print(
        f"ratio {t_ours / t_bare:.2f}x; one-off import of sklearn + ltr.data.letor {import_s:.2f} s"
    )
    targets = Targets()
    targets.at_most("read_letor, all of MQ2008 S1..S5", t_ours, MAX_SECONDS, "s", ".3f")
    return targets.report()


if __name__ == "__main__":
    raise SystemExit(main())
