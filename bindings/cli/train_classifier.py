"""``afdps train-classifier``: train the MNIST digit classifier (the work: :func:`afdps.engine.training.train_classifier`)."""
from __future__ import annotations

from ..engine.training import train_classifier
from ._common import DEFAULT_THREADS, command_line, positive_float, positive_int, seed_int

HELP = "train the MNIST digit classifier used to check the prior"
EPOCHS = 4  # --epochs without --steps (the shipped classifier's)


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="checkpoint to write (e.g. out/mnist_classifier.pt)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"passes over the 50,000 training digits (default: {EPOCHS})")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="optimizer steps in all, in place of --epochs (a quick check; an epoch is 50,000 / "
                        "--batch-size steps, 390 at the default, about 130 s on a 2-core CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default: 128)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default: 0)")
    parser.add_argument("--lr", type=positive_float, default=2e-3, help="peak AdamW learning rate (default: 2e-3)")
    parser.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                        help="torch CPU threads (default: half the cores, at most 8; here %(default)s)")


def run(args) -> int:
    if args.steps is not None and args.epochs is not None:
        raise ValueError(f"--steps {args.steps} and --epochs {args.epochs} both say how long to train; give one")
    meta = train_classifier(args.out, epochs=args.epochs or EPOCHS, batch_size=args.batch_size, seed=args.seed,
                            lr=args.lr, threads=args.threads, command=command_line(), steps=args.steps)
    print(f"wrote {args.out} after {meta['steps']} steps: test accuracy {meta['test_accuracy']:.4f} "
          f"(first 1000: {meta['test_accuracy_first_1000']:.4f}), {meta['wall_time_s'] / 60:.1f} min")
    return 0
