"""``afdps train-prior``: train the small MNIST diffusion prior (the work: :func:`afdps.engine.training.train_prior`)."""
from __future__ import annotations

import sys

from ..api import load_classifier, load_prior
from ..engine.training import PRIOR_CONFIG, Stopped, prior_sanity_check, train_prior
from ..shipped import SHIPPED_PRIORS, shipped_file
from ._common import (DEFAULT_THREADS, command_line, nonneg_int, positive_float, positive_int, resolve_device,
                      seed_int, unit_float)

HELP = "train the small MNIST diffusion prior (DDPM epsilon objective, ADM UNet)"


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="mnist", choices=["mnist"], help="training data (default: mnist)")
    parser.add_argument("--out", required=True, help="checkpoint to write (e.g. out/mnist_prior.pt)")
    parser.add_argument("--steps", type=positive_int, default=3500, help="optimizer steps (default: 3500)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default: 128)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default: 0)")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="peak AdamW learning rate (default: 1e-3)")
    parser.add_argument("--warmup", type=nonneg_int, default=200, help="linear warm-up steps (default: 200)")
    parser.add_argument("--ema-decay", type=unit_float, default=0.999, help="EMA decay of the saved weights (default: 0.999)")
    parser.add_argument("--num-channels", type=positive_int, default=None,
                        help=f"ADMUNet base width, a multiple of 32 (default: {PRIOR_CONFIG['num_channels']})")
    parser.add_argument("--num-res-blocks", type=positive_int, default=None,
                        help=f"ResBlocks per level (default: {PRIOR_CONFIG['num_res_blocks']})")
    parser.add_argument("--log", default=None, help="loss CSV (default: <out stem>_loss.csv next to --out)")
    parser.add_argument("--log-every", type=positive_int, default=50, help="steps per loss row (default: 50)")
    parser.add_argument("--checkpoint-every", type=nonneg_int, default=500,
                        help="steps between resumable training states <out>.state (default: 500; 0: none)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>.state if it exists (refused where --out holds a "
                        "finished run's checkpoint and no state; without --resume an <out>.state there is refused, "
                        "not overwritten)")
    parser.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                        help="torch CPU threads (default: half the cores, at most 8; here %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--init-from", default=None,
                        help="continue from this afdps prior checkpoint, or 'mnist' for the shipped prior (its config: "
                             "--num-channels and --num-res-blocks may not be given; fresh optimizer)")
    parser.add_argument("--sanity-samples", type=nonneg_int, default=0,
                        help="after training, draw this many samples and report the fraction the classifier "
                             "labels with confidence >= 0.9 (default: 0, skip)")
    parser.add_argument("--classifier", default="mnist",
                        help="the classifier of --sanity-samples: 'mnist' (shipped) or a checkpoint of afdps "
                             "train-classifier (default: mnist)")


def run(args) -> int:
    device = resolve_device(args.device)
    given = {k: getattr(args, k) for k in ("num_channels", "num_res_blocks") if getattr(args, k) is not None}
    config = dict(PRIOR_CONFIG, **given)
    if args.init_from is not None:
        changed = [f"--{k.replace('_', '-')}" for k in given]
        if changed:
            raise ValueError(f"--init-from takes the checkpoint's architecture; leave out {', '.join(changed)}")
        config = None  # taken from the checkpoint
        args.init_from = shipped_file(args.init_from, SHIPPED_PRIORS, "prior") or args.init_from
    if args.classifier != "mnist" and not args.sanity_samples:
        raise ValueError("--classifier is the classifier of --sanity-samples; give that too, or leave it out")
    if args.sanity_samples:  # (before training, not after it)
        load_classifier(args.classifier)
    try:
        meta = train_prior(
            args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
            warmup=args.warmup, ema_decay=args.ema_decay, config=config, log_every=args.log_every,
            log_path=args.log, checkpoint_every=args.checkpoint_every, resume=args.resume,
            threads=args.threads, device=device, command=command_line(), init_from=args.init_from,
        )
    except Stopped as exc:  # SIGTERM: the state is saved
        print(f"afdps train-prior: {exc}", file=sys.stderr)
        return 143
    print(f"wrote {args.out}: {meta['steps']} steps, final loss {meta['final_loss']:.4f}, "
          f"{meta['wall_time_s'] / 60:.1f} min")
    if args.sanity_samples:
        result = prior_sanity_check(load_prior(args.out, device=device), load_classifier(args.classifier),
                                    num_samples=args.sanity_samples)
        print(f"sanity check: {result['fraction_confident']:.3f} of {result['num_samples']} samples "
              f"classified with confidence >= 0.9; labels {result['label_counts']} (uniform noise scores "
              f"{result['noise_fraction_confident']:.3f}: the classifier is no digit detector, look at the samples)")
    return 0
