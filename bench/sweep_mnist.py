"""Configuration sweep of the particle methods on MNIST digits (issue 8's development split).

Runs :func:`afdps.engine.evaluate.evaluate` for every combination of ``--methods`` x ``--potentials`` x
``--temperings`` x ``--time-powers`` (in ``--schedule`` coordinates) on the first ``--num-images`` shipped test digits (the development
split: tune on nothing else), plus DPS once per task, and writes one row per task x configuration to
``OUT/sweep.csv`` and ``OUT/sweep.md`` after each configuration (an interrupted sweep keeps its rows).

    python -m bench.sweep_mnist --num-images 20 --tasks box,random70 --out bench/results/sweep_mnist
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from afdps import VESchedule, load_classifier, load_mnist_test, load_prior  # noqa: E402
from afdps.engine.evaluate import METHODS, TASKS, csv_text, evaluate  # noqa: E402
from afdps.engine.potentials import POTENTIALS  # noqa: E402
from afdps.engine.sampler import DEFAULT_CORRECTOR_SNR, TEMPERINGS  # noqa: E402
from afdps.cli._common import format_snr, snr_schedule, steps_int  # noqa: E402
from afdps.engine.io import markdown_table, write_text  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-images", type=int, default=20)
    p.add_argument("--tasks", default="box,random70")
    p.add_argument("--methods", default="afdps-sde,fk")
    p.add_argument("--potentials", default="noisy,scaled,inflated,tweedie")
    p.add_argument("--temperings", default="linear")
    p.add_argument("--tempering-ess", type=float, default=0.5, help="ESS target of the adaptive temperings")
    p.add_argument("--time-powers", default="2", help="VP time-grid powers (the VE EDM grid takes none)")
    p.add_argument("--schedule", choices=SCHEDULES, default="vp",
                   help="vp: the network's own VP coordinates; ve-edm: VE coordinates with sigma_max 80 and the EDM "
                        "rho = 7 grid, as the AFDPS authors ran VP networks")
    p.add_argument("--particles", type=int, default=16)
    p.add_argument("--steps", type=steps_int, default=100)
    p.add_argument("--dps", action="store_true", help="also run DPS once per task")
    p.add_argument("--dps-zeta", type=float, default=3.0)
    p.add_argument("--corrector-snr", type=snr_schedule, default=DEFAULT_CORRECTOR_SNR,
                   help="r of afdps-ode's split corrector, or r_early,r_late (default: the engine's)")
    p.add_argument("--ess-threshold", type=float, default=0.5,
                   help="the particle methods resample below this normalised ESS (0: never; default: the engine's)")
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    p.add_argument("--out", default="bench/results/sweep_mnist")
    args = p.parse_args(argv)
    for opt, allowed in (("tasks", TASKS), ("methods", PARTICLE_METHODS), ("potentials", POTENTIALS),
                         ("temperings", TEMPERINGS)):
        bad = [v for v in getattr(args, opt).split(",") if v not in allowed]
        if bad:  # one line before any work, not a traceback from the first evaluate() call
            p.error(f"--{opt} {bad[0]!r}: choose from {', '.join(allowed)}")
    return args


SCHEDULES = ("vp", "ve-edm")
PARTICLE_METHODS = tuple(m for m in METHODS if m != "dps")  # (DPS: --dps)
COLS = ["task", "device", "schedule", "method", "potential", "tempering", "time_power", "corrector_snr", "ess_threshold", "nfe", "psnr_mean", "psnr_mean_se", "psnr_best",
        "accuracy_best", "accuracy_mean", "accuracy_any", "labels_distinct", "final_ess", "s_per_image"]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    schedule = VESchedule(80.0, grid="edm") if args.schedule == "ve-edm" else None
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device")
    prior, clf = load_prior("mnist", schedule=schedule, device=device), load_classifier("mnist")  # evaluate classifies on the CPU
    images, labels = load_mnist_test(args.num_images)
    tasks = args.tasks.split(",")
    out = Path(args.out)
    rows = []
    configs = [("dps", "-", "-", 0.0)] if args.dps else []
    configs += list(itertools.product(args.methods.split(","), args.potentials.split(","),
                                      args.temperings.split(","), [float(p) for p in args.time_powers.split(",")]))
    for method, potential, tempering, power in configs:
        t0 = time.perf_counter()
        summary, _ = evaluate(prior, images, tasks=tasks, methods=[method], particles=args.particles, steps=args.steps,
                              labels=labels, classifier=clf, batch_size=args.batch_size,
                              tempering=tempering if method != "dps" else "linear",
                              potential=potential if method != "dps" else "noisy", time_power=power or 2.0,
                              dps_zeta=args.dps_zeta, corrector_snr=args.corrector_snr, progress=False,
                              tempering_ess=args.tempering_ess, ess_threshold=args.ess_threshold, device=device)
        for r in summary:
            r.update(device=str(device), schedule=args.schedule, potential=potential, tempering=tempering if not tempering.startswith("adaptive") else
                     f"{tempering} (ESS {args.tempering_ess:g})", time_power=power, images=args.num_images,
                     corrector_snr=format_snr(args.corrector_snr) if method == "afdps-ode" else "",
                     ess_threshold=args.ess_threshold if method != "dps" else "",
                     particles=args.particles, steps=args.steps)
            rows.append(r)
            print(f"{r['task']:>9} {args.schedule} {method:>9} {potential:>8} {tempering:>9} p{power:g}: PSNR mean {r['psnr_mean']:.2f} "
                  f"acc best {r['accuracy_best']:.2f} any {r['accuracy_any'] if r['accuracy_any'] != '' else '-'} "
                  f"labels {r['labels_distinct']} ESS {r['final_ess'] if r['final_ess'] != '' else '-'} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        write_text(out / "sweep.csv", csv_text(rows))

        def cell(v):
            return f"{v:.3g}" if isinstance(v, float) else str(v)

        write_text(out / "sweep.md", markdown_table(COLS, [[cell(r.get(c, "")) for c in COLS] for r in rows]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
