"""Paired comparison of two methods in ``afdps eval`` outputs: per task, the mean PSNR of the weighted mean and the
accuracy of the best particle of each method, and their per-image differences with standard errors (the same
images and measurements, so the paired error is the one that says whether a difference is real). Images are paired
by index; runs in two folders must have measured the same images alike (their settings.json: noise level, seed,
each image's hash; and the images' file names where recorded), and a task or image that only one side has is
named on stderr.

    python -m bench.compare_eval bench/results/eval_mnist_dev100 bench/results/eval_mnist_dev100_r70 --a fk --b dps

``--a`` and ``--b`` name a method, or ``METHOD@FOLDER`` for the method's run in one of the folders (two runs of
one method, e.g. two settings: ``--a afdps-ode@runs/r0.3 --b afdps-ode@runs/r0.1``). A method whose rows differ
between folders must be named with its folder.

``--summary`` instead merges the ``results.csv`` rows of several runs (one per task x method) into one table of
``afdps eval``'s columns, tasks in first-seen order and the methods of a task in ``afdps eval``'s order: the
table of runs made one task or one method at a time. A row over fewer images than the most any row has says so
("fk (4 of 6 images)"), and a task's rows measured otherwise (another seed or noise level) are refused.

    python -m bench.compare_eval --summary bench/results/eval_mnist_dev100*
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from afdps.engine.evaluate import METHODS, NotEvalRows, markdown_table, mean_se, plus_minus, read_eval_rows
from bench.runner import print_report


def _eval_file(folder, name) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        raise SystemExit(f"compare_eval: {folder} has no {name} (not an afdps eval output, or a run still going)")
    return path


def _rows(folder, name) -> list[dict]:
    """The rows of ``folder/name`` as ``afdps eval`` reads them back (a row cut short is left out, as its --resume
    leaves it: the image is then compared on the other side's rows only if both have it); a file that is not such a
    CSV is named."""
    path = _eval_file(folder, name)
    try:
        return read_eval_rows(path, per_image=name == "per_image.csv")
    except NotEvalRows as exc:
        if exc.line is None:
            raise SystemExit(f"compare_eval: {path} is not the CSV afdps eval writes ({exc.reason})") from None
        raise SystemExit(f"compare_eval: {path}, line {exc.line}: {exc.reason}") from None


def _per_image(folders) -> dict:
    """``{folder: {(task, method): {image: row}}}`` of the folders' ``per_image.csv``."""
    out = {}
    for folder in folders:
        for r in _rows(folder, "per_image.csv"):
            out.setdefault(folder, {}).setdefault((r["task"], r["method"]), {})[r["image"]] = r
    return out


# per-image columns that say how a row was timed, not what it measured: a rerun differs there only
_TIMING = ("seconds", "device")


def _measured(rows: dict) -> dict:
    """The rows without their timings, as text (a NaN metric equals itself as text, not as a number)."""
    return {i: {k: str(v) for k, v in r.items() if k not in _TIMING} for i, r in rows.items()}


def _pick(per, spec: str, task: str):
    """``(folder, rows)``: the per-image rows of ``spec`` (``METHOD`` or ``METHOD@FOLDER``) on ``task`` and the
    folder they came from, or ``(None, None)`` where none ran."""
    method, _, folder = spec.partition("@")
    if folder:
        match = [f for f in per if Path(f) == Path(folder)]
        if not match:
            raise SystemExit(f"compare_eval: {spec}: {folder} is not one of the folders given ({', '.join(per)})")
        rows = per[match[0]].get((task, method))
        return (match[0], rows) if rows else (None, None)
    runs = {f: rows[(task, method)] for f, rows in per.items() if (task, method) in rows}
    if not runs:
        return None, None
    first, *rest = runs
    for f in rest:
        if _measured(runs[f]) != _measured(runs[first]):  # (a rerun with other timings is the same run)
            raise SystemExit(f"compare_eval: {task} x {method} differs between {first} and {f}; name the run as "
                             f"{method}@{first} or {method}@{f}")
    return first, runs[first]


# what makes image i's measurement (afdps eval's settings.json): pairs from runs that differ here are not paired
_MEASURED = ("sigma_y", "seed")  # (not the prior: two priors on the same measurements are a fair pair)


def _check_same_measurements(task: str, fa, fb, common) -> None:
    """Refuse to pair two runs whose image ``i`` is not the same image measured the same way: another noise level
    or seed in their settings.json, another image (its hash), or another file name."""
    if fa == fb:
        return
    sa, sb = (json.loads((Path(f) / "settings.json").read_text()) if (Path(f) / "settings.json").is_file() else None
              for f in (fa, fb))
    if sa is None or sb is None:
        print(f"compare_eval: {task}: {fa if sa is None else fb} has no settings.json: the runs' measurements are "
              "taken to be the same", file=sys.stderr)
        return
    differ = [k for k in _MEASURED if k in sa and k in sb and sa[k] != sb[k]]  # (older runs lack some)
    ha, hb = sa.get("image_sha256") or [], sb.get("image_sha256") or []
    other = [i for i in common if i < min(len(ha), len(hb)) and ha[i] != hb[i]]
    if differ or other:
        raise SystemExit(f"compare_eval: {task}: {fa} and {fb} did not measure the same images ("
                         + ", ".join([f"{k} {sa.get(k)!r} against {sb.get(k)!r}" for k in differ]
                                     + ([f"image {other[0]} is another image"] if other else []))
                         + "): their differences are not paired")


_METRICS = ("images", "nfe", "psnr_best", "psnr_mean", "ssim_mean", "accuracy_best", "accuracy_any", "final_ess")


def summary_table(folders) -> str:
    """One markdown table of the ``results.csv`` rows of ``folders``. A task x method pair in two folders must be
    the same run repeated (equal metrics: fixed seeds make reruns identical); the first folder's row is shown
    and the repeat named on stderr. Pairs whose metrics differ are an error: which run should the table show?"""
    rows, seen, measured = [], {}, {}
    for folder in folders:
        for r in _rows(folder, "results.csv"):
            key = (r["task"], r["method"])
            if key in seen:
                first, where = seen[key]
                differ = [m for m in _METRICS if first.get(m) != r.get(m)]
                if differ:
                    raise ValueError(f"{key[0]} x {key[1]} is in both {where} and {folder} with different "
                                     f"{', '.join(differ)}: pass one of them")
                print(f"{key[0]} x {key[1]}: {folder} repeats {where} (same metrics), shown once", file=sys.stderr)
                continue
            seen[key] = (r, folder)
            rows.append(r)
            # a task's rows side by side must have measured the same images alike (results.csv's noise level and
            # seed; runs before 2026-12-03 lack them)
            how = tuple(r.get(k, "") for k in _MEASURED)
            other = measured.setdefault(key[0], (how, folder))
            differ = [(k, a, b) for k, a, b in zip(_MEASURED, other[0], how) if "" not in (a, b) and a != b]
            if differ:
                raise ValueError(f"{key[0]}: {other[1]} and {folder} measured its images otherwise ("
                                 + ", ".join(f"{k} {a!r} against {b!r}" for k, a, b in differ)
                                 + "): their rows are not comparable in one table")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (tasks.index(r["task"]), order.get(r["method"], len(order)), r["method"]))
    most = max((r["images"] for r in rows if isinstance(r.get("images"), int)), default=None)
    if any(r.get("images") != most for r in rows):  # (a row over fewer images says so: "fk (4 of 6 images)")
        print(f"compare_eval: the rows cover different numbers of images (at most {most}): each says its own",
              file=sys.stderr)
    return markdown_table(rows, images=most)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--a", default="fk")
    p.add_argument("--b", default="dps")
    p.add_argument("--out", default=None)
    p.add_argument("--summary", action="store_true", help="merge the runs' results.csv into one table")
    args = p.parse_args(argv)
    if args.summary:
        try:
            table = summary_table(args.folders)
        except ValueError as e:  # two different runs of one task x method: one line, not a traceback
            raise SystemExit(f"compare_eval: {e}") from None
        print_report(table, args.out)
        return 0
    per = _per_image(args.folders)
    tasks = list(dict.fromkeys(t for rows in per.values() for t, _ in rows))
    ran = sorted({m for rows in per.values() for _, m in rows})
    for spec in (args.a, args.b):
        method, _, folder = spec.partition("@")
        if folder and not any(Path(f) == Path(folder) for f in per):
            raise SystemExit(f"compare_eval: {spec}: {folder} is not one of the folders given ({', '.join(per)})")
        if method not in ran:  # (an empty table would look like "nothing to compare")
            raise SystemExit(f"compare_eval: {spec}: no such method in these folders; they ran {', '.join(ran)}")
    lines = [f"| task | images | PSNR mean {args.a} | PSNR mean {args.b} | {args.a} - {args.b} (paired) | "
             f"accuracy best {args.a} | accuracy best {args.b} | {args.a} - {args.b} (paired) | labels / image ({args.a}) |"
             f" any particle right ({args.a}) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        (fa, a), (fb, b) = _pick(per, args.a, t), _pick(per, args.b, t)
        if not a or not b:
            print(f"compare_eval: {t}: only {args.a if a else args.b} ran it; left out" if a or b else
                  f"compare_eval: {t}: neither {args.a} nor {args.b} ran it; left out", file=sys.stderr)
            continue
        common = sorted(set(a) & set(b))
        if not common:
            raise SystemExit(f"compare_eval: {t}: {args.a} and {args.b} share no image (different --num-images?)")
        if len(common) < max(len(a), len(b)):  # (the means below are over the shared images, not the runs' own)
            print(f"compare_eval: {t}: {args.a} has {len(a)} images, {args.b} {len(b)}; compared on the {len(common)} "
                  "both have", file=sys.stderr)
        names = [i for i in common if a[i].get("file", "") and b[i].get("file", "") and a[i]["file"] != b[i]["file"]]
        if names:
            i = names[0]
            raise SystemExit(f"compare_eval: {t}: image {i} is {a[i]['file']} in {args.a}'s run and {b[i]['file']} in "
                             f"{args.b}'s: not the same images")
        _check_same_measurements(t, fa, fb, common)
        pa = [float(a[i]["psnr_mean"]) for i in common]
        pb = [float(b[i]["psnr_mean"]) for i in common]
        dp = mean_se([x - y for x, y in zip(pa, pb)])
        (ma, sa), (mb, sb) = mean_se(pa), mean_se(pb)
        cells = [t, str(len(common)), f"{ma:.2f}{plus_minus(sa)}", f"{mb:.2f}{plus_minus(sb)}",
                 f"{dp[0]:+.2f}{plus_minus(dp[1])}"]
        if all(r.get("correct_best", "") != "" for r in [*(a[i] for i in common), *(b[i] for i in common)]):
            ca = [float(a[i]["correct_best"]) for i in common]
            cb = [float(b[i]["correct_best"]) for i in common]
            dc = mean_se([x - y for x, y in zip(ca, cb)])
            lab = mean_se([float(a[i]["labels_distinct"]) for i in common])[0]
            anyr = mean_se([float(a[i]["correct_any"]) for i in common])[0]
            cells += [f"{sum(ca) / len(ca):.2f}", f"{sum(cb) / len(cb):.2f}", f"{dc[0]:+.2f}{plus_minus(dc[1])}",
                      f"{lab:.2f}", f"{anyr:.2f}"]
        else:  # (no classifier: a user's own images)
            cells += ["-"] * 5
        lines.append("| " + " | ".join(cells) + " |")
    print_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
