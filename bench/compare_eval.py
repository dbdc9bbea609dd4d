"""Paired comparison of two methods in ``afdps eval`` outputs: per task, the mean PSNR of the weighted mean and the
accuracy of the best particle of each method, and their per-image differences with standard errors (the same
images and measurements, so the paired error is the one that says whether a difference is real).

    python -m bench.compare_eval bench/results/eval_mnist_dev100 bench/results/eval_mnist_dev100_r70 --a fk --b dps
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from bench.runner import print_report


def _rows(folders):
    rows = []
    for folder in folders:
        with open(Path(folder) / "per_image.csv") as f:
            rows += list(csv.DictReader(f))
    return rows


def _mean_se(values):
    n = len(values)
    m = sum(values) / n
    var = sum((v - m) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return m, math.sqrt(var / n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--a", default="fk")
    p.add_argument("--b", default="dps")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = _rows(args.folders)
    by = {}
    for r in rows:
        by.setdefault((r["task"], r["method"]), {})[int(r["image"])] = r
    tasks = sorted({t for t, _ in by}, key=[r["task"] for r in rows].index)
    lines = [f"| task | images | PSNR mean {args.a} | PSNR mean {args.b} | {args.a} - {args.b} (paired) | "
             f"accuracy best {args.a} | accuracy best {args.b} | {args.a} - {args.b} (paired) | labels / image ({args.a}) |"
             f" any particle right ({args.a}) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        a, b = by.get((t, args.a)), by.get((t, args.b))
        if not a or not b:
            continue
        common = sorted(set(a) & set(b))
        pa = [float(a[i]["psnr_mean"]) for i in common]
        pb = [float(b[i]["psnr_mean"]) for i in common]
        ca = [float(a[i]["correct_best"]) for i in common]
        cb = [float(b[i]["correct_best"]) for i in common]
        dp = _mean_se([x - y for x, y in zip(pa, pb)])
        dc = _mean_se([x - y for x, y in zip(ca, cb)])
        lab = _mean_se([float(a[i]["labels_distinct"]) for i in common])[0]
        anyr = _mean_se([float(a[i]["correct_any"]) for i in common])[0]
        (ma, sa), (mb, sb) = _mean_se(pa), _mean_se(pb)
        lines.append(f"| {t} | {len(common)} | {ma:.2f} ± {sa:.2f} | {mb:.2f} ± {sb:.2f} | {dp[0]:+.2f} ± {dp[1]:.2f} | "
                     f"{sum(ca) / len(ca):.2f} | {sum(cb) / len(cb):.2f} | {dc[0]:+.2f} ± {dc[1]:.2f} | {lab:.2f} | {anyr:.2f} |")
    print_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
