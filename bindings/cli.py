"""The ``afdps`` command line: ``afdps <command> [options]``; ``afdps <command> --help`` for each.

Exit status: 0 success, 1 failure while running, 2 bad usage or bad input.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> ("module:function that adds its arguments", "module:function that runs it", help)
COMMANDS = {
    "demo": ("afdps.demo:add_arguments", "afdps.demo:run", "restore a bundled photo with the bundled prior"),
    "train-prior": ("afdps.engine.mnist:add_train_prior_arguments", "afdps.engine.mnist:run_train_prior",
                    "train the small MNIST diffusion prior (DDPM epsilon objective, ADM UNet)"),
    "eval": ("afdps.engine.evaluate:add_arguments", "afdps.engine.evaluate:run",
             "benchmark AFDPS, FK and DPS on restoration tasks (PSNR, SSIM, accuracy, ESS, time)"),
    "train-classifier": ("afdps.engine.mnist:add_train_classifier_arguments",
                         "afdps.engine.mnist:run_train_classifier",
                         "train the MNIST digit classifier used to check the prior"),
}


def _resolve(spec: str):
    mod, fn = spec.split(":")
    return getattr(importlib.import_module(mod), fn)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="afdps", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (add, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        _resolve(add)(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(_resolve(COMMANDS[args.command][1])(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"afdps {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"afdps {args.command}: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  (one-line report on stderr, status 1)
        print(f"afdps {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
