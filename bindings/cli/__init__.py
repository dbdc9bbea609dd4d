"""The ``afdps`` command line: ``afdps <command> [options]``; ``afdps <command> --help`` for each.

Exit status: 0 success, 1 failure while running, 2 bad usage or bad input.
"""
from __future__ import annotations

import argparse
import sys

from . import demo, eval, train_classifier, train_prior

# name -> module with HELP, add_arguments(parser) and run(args)
COMMANDS = {"demo": demo, "train-prior": train_prior, "eval": eval, "train-classifier": train_classifier}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="afdps", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(COMMANDS[args.command].run(args) or 0)
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
