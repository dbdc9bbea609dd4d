"""Prior sanity check: the fraction of unconditional samples the shipped classifier labels with
confidence >= 0.9 (requirement for the shipped MNIST prior: >= 0.9 with 1000 samples).

    python -m bench.prior_sanity --prior mnist --samples 1000 --steps 100 1000 --device cuda
"""
from __future__ import annotations

import argparse
import json

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", nargs="+", default=["mnist"], help="'mnist' or checkpoint paths")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--steps", type=int, nargs="+", default=[100], help="ancestral steps (one check per value)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250, help="samples per network call (memory bound; the Philox noise does not depend on it)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    from afdps import load_classifier, load_prior
    from afdps.engine.training import prior_sanity_check

    results = []
    for path in args.prior:
        prior = load_prior(path, device=args.device)
        for steps in args.steps:
            r = prior_sanity_check(prior, load_classifier("mnist"), num_samples=args.samples, num_steps=steps, seed=args.seed,
                                   batch_size=args.batch_size)
            r.update(prior=path, device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu")
            print(json.dumps(r), flush=True)
            results.append(r)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
