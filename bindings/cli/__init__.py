"""The ``afdps`` command line: ``afdps [--debug] <command> [options]``; ``afdps <command> --help`` for each.

Exit status: 0 success, 1 failure while running, 2 bad usage or bad input (one sentence on stderr that
names the bad value; a traceback only with ``--debug`` or ``AFDPS_DEBUG=1``).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from . import demo, eval, restore, train_classifier, train_prior
from ._common import HelpFormatter

# name -> module with HELP, add_arguments(parser) and run(args)
COMMANDS = {"demo": demo, "restore": restore, "eval": eval, "train-prior": train_prior,
            "train-classifier": train_classifier}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="afdps", description="Image restoration by posterior sampling with AFDPS "
                                     "(afdps <command> --help describes a command and its options)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP,
                                            formatter_class=HelpFormatter))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"afdps: error: name a command, one of {', '.join(COMMANDS)} (afdps --help describes them)",
              file=sys.stderr)
        return 2
    debug = args.debug or os.environ.get("AFDPS_DEBUG", "") not in ("", "0")
    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        if not debug:  # one line each, like the errors (Python's format shows a source line of afdps)
            warnings.showwarning = lambda message, category, *rest, **kw: print(
                f"afdps {args.command}: warning: {message}", file=sys.stderr)
        return _run(args, debug)


def _run(args, debug: bool) -> int:
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, MemoryError, ImportError) as exc:
        if debug:
            traceback.print_exc()
        words = getattr(COMMANDS[args.command], "MEMORY_OPTIONS", "")
        said = f" ({words})" if "lower num_particles" in str(exc) and words else ""  # (the API's names)
        print(f"afdps {args.command}: error: {exc}{said}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"afdps {args.command}: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  (one-line report on stderr, status 1)
        if debug:
            traceback.print_exc()
        print(f"afdps {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
