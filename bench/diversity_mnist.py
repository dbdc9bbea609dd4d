"""Where the ensembles' diversity goes (issue 8): distinct classifier labels per image and the particles'
spread, for the default method with and without its weights and resampling, against 16 independent DPS
runs per image, on the first ``--num-images`` development digits.

Each variant restores the same measurements (image ``i``: seed ``i``, as ``afdps eval`` does). Columns:
labels / image (distinct labels among the live particles), any right (some particle has the true digit),
majority right (the true label is held by more particles than any other; a tie is not a majority), best right
(the highest-weight particle; DPS: its first sample), pixel std (per-pixel standard deviation across the
particles, unweighted, averaged over the pixels and images: 0 when the particles coincide), ESS/N at the end
(blank for DPS, whose runs are independent and unweighted), PSNR of the weighted mean (DPS: the average of
its runs).

    python -m bench.diversity_mnist --num-images 20 --task box --out bench/results/diversity_dev20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from afdps.cli._common import nonneg_int, positive_int, sigma_float, steps_int  # noqa: E402
from afdps import load_classifier, load_mnist_test, load_prior  # noqa: E402
from afdps.engine.baselines import dps  # noqa: E402
from afdps.engine.evaluate import csv_text, make_operator, mean_se, measurements, plus_minus  # noqa: E402
from afdps.engine.io import markdown_table, write_text  # noqa: E402
from afdps.engine.metrics import psnr  # noqa: E402
from afdps.engine.models import classify  # noqa: E402
from afdps.engine.sampler import sample  # noqa: E402

VARIANTS = {  # name -> options of afdps.sample on top of the defaults (FK, eta 0.5, Tweedie, linear, power 2)
    "fk": {},                                   # the default
    "fk-no-resampling": dict(resample="none"),  # weights kept, never resampled
    "fk-unweighted": dict(weights=False),       # the guided SDE alone
    "afdps-sde": dict(eta=1.0, potential="scaled"),
}
DPS = "dps"  # N independent DPS runs per image
COLS = ["variant", "images", "labels_per_image", "any_right", "majority_right", "best_right", "pixel_std", "final_ess",
        "psnr_mean", "s_per_image"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-images", type=positive_int, default=20)
    p.add_argument("--offset", type=nonneg_int, default=0, help="skip this many digits first (to split a run)")
    p.add_argument("--task", default="box")
    p.add_argument("--particles", type=positive_int, default=16)
    p.add_argument("--steps", type=steps_int, default=100)
    p.add_argument("--sigma-y", type=sigma_float, default=0.05)
    p.add_argument("--dps-zeta", type=float, default=3.0)
    p.add_argument("--variants", default=",".join([DPS, *VARIANTS]),
                   help=f"comma-separated, from: {DPS} (N independent runs per image), {', '.join(VARIANTS)}")
    p.add_argument("--batch-size", type=positive_int, default=5, help="images per sampler call")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--out", default="bench/results/diversity_mnist")
    return p.parse_args(argv)


def ensemble_stats(particles, log_weights, truth_labels, classifier, weighted: bool = True) -> list[dict]:
    """Per image: the diversity columns of one ensemble ``particles (B, N, 1, 28, 28)`` (``weighted=False``:
    independent unweighted runs, no ESS)."""
    B, N = particles.shape[:2]
    lab = classify(classifier, particles.reshape(B * N, *particles.shape[2:]).nan_to_num().clamp(-1, 1))[0].view(B, N)
    logw = torch.as_tensor(log_weights, dtype=torch.float64).view(B, N)
    rows = []
    for b in range(B):
        live = torch.isfinite(logw[b])
        labs = lab[b][live]
        counts = torch.bincount(labs, minlength=10)
        truth = int(truth_labels[b])
        w = torch.softmax(logw[b], 0)
        ess = float(1.0 / w.square().sum()) / N if weighted else ""
        rows.append({"labels_per_image": len(set(labs.tolist())), "any_right": int((labs == truth).any()),
                     "majority_right": int(bool(counts[truth] > torch.cat([counts[:truth], counts[truth + 1:]]).max())),
                     "best_right": int(int(lab[b][int(torch.argmax(logw[b]))]) == truth),
                     "pixel_std": float(particles[b][live].double().std(0, unbiased=False).mean()), "final_ess": ess})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.variants.split(",")
    for n in names:
        if n != DPS and n not in VARIANTS:
            raise SystemExit(f"unknown variant {n!r}; available: {DPS}, {', '.join(VARIANTS)}")
    prior, clf = load_prior("mnist"), load_classifier("mnist")
    images, labels = load_mnist_test(args.offset + args.num_images)
    images, labels = images[args.offset:], labels[args.offset:]
    op = make_operator(args.task, tuple(images.shape[1:]))
    ys = measurements(op, images, args.sigma_y, seed=args.offset)
    out, table = Path(args.out), []
    for name in names:
        per, t0 = [], time.perf_counter()
        for a in range(0, args.num_images, args.batch_size):
            b = min(a + args.batch_size, args.num_images)
            seeds = list(range(args.offset + a, args.offset + b))
            if name == DPS:
                r = dps(prior, op, ys[a:b], args.sigma_y, num_steps=args.steps, zeta=args.dps_zeta,
                        num_samples=args.particles, seed=seeds, progress=False)
            else:
                r = sample(prior, op, ys[a:b], args.sigma_y, num_particles=args.particles, num_steps=args.steps,
                           seed=seeds, progress=False, **VARIANTS[name])
            stats = ensemble_stats(r.particles.float(), r.log_weights, labels[a:b], clf, weighted=name != DPS)
            for j, st in enumerate(stats):
                st["psnr_mean"] = psnr(r.mean[j].float(), images[a + j].float())
            per += stats
            print(f"{name}: {b}/{args.num_images} images ({time.perf_counter() - t0:.0f} s)", flush=True)
        row = {"variant": name, "images": len(per)}
        for c in COLS[2:-1]:
            m, se = mean_se(p[c] for p in per if p[c] != "")
            row[c], row[c + "_se"] = m, se
        row["s_per_image"] = (time.perf_counter() - t0) / len(per)
        table.append(row)
        write_text(out / "diversity.csv", csv_text(table))
        cells = [[r["variant"], str(r["images"])] + ["-" if r[c] == "" else f"{r[c]:.3g}{plus_minus(r[c + '_se'], '.2g')}"
                                                     for c in COLS[2:-1]] +
                 [f"{r['s_per_image']:.1f}"] for r in table]
        first = f"first {args.num_images}" if not args.offset else f"{args.num_images} after the first {args.offset}"
        write_text(out / "diversity.md", f"task {args.task}, {first} digits, N = {args.particles}, "
                   f"{args.steps} steps, sigma_y {args.sigma_y}, DPS zeta {args.dps_zeta}\n\n" +
                   markdown_table(COLS, cells) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
