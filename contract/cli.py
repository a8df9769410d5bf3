"""One command-line style for every stage: argparse subcommands, ``--help`` listing them, ``--debug``, and
failures reported as one line with the exit codes of ``contract.errors``.

Each stage's ``__main__`` builds an ``argparse`` parser with subcommands and calls
``run_command(main, argv, prog)``; ``with_default_subcommand`` keeps the older forms (``python -m simulate
--config ...``) working by inserting the stage's default subcommand.
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable, Sequence

from .errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    StemError,
)

DEBUG_HELP = "print the traceback of a failure (otherwise one line on stderr)"


def stage_parser(prog: str, description: str):
    """``(parser, subparsers)`` of a stage's command line, the one style of every stage: ``--debug`` (a traceback
    with the error) and a required ``SUBCOMMAND`` that ``--help`` lists."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")


def with_default_subcommand(argv: Sequence[str], default: str) -> list[str]:
    """``argv`` with ``default`` inserted in front when it starts with an option other than ``-h/--help``."""
    argv = list(argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        return [default, *argv]
    return argv


def one_line(text) -> str:
    """Collapse a message onto one line (stderr readers grep lines)."""
    return " ".join(str(text).split())


def run_command(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
                prog: str = "python -m ...", stream=None) -> int:
    """Run ``main(argv)`` (argv without ``--debug``) and return its exit code.

    ``StemError`` -> ``error: <message>`` and its exit code; ``KeyboardInterrupt`` -> 130; any other exception
    -> one line naming it and exit 1. ``--debug`` anywhere in argv lets the traceback through as well.
    """
    stream = sys.stderr if stream is None else stream
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        code = main(argv)
        return EXIT_OK if code is None else int(code)
    except SystemExit as exc:  # argparse's own usage errors (exit 2) and --help (exit 0)
        if isinstance(exc.code, str):
            print(f"error: {one_line(exc.code)}", file=stream)
            return EXIT_BAD_INPUT
        return EXIT_OK if exc.code is None else int(exc.code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=stream)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc(file=stream)
        expected = expected_cause(exc)
        if expected is not None:
            print(f"error: {one_line(expected)}", file=stream)
            return expected.exit_code
        # a bug or an unforeseen failure: one line, the traceback on request
        print(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the traceback)",
              file=stream)
        return EXIT_UNEXPECTED


def expected_cause(exc: BaseException) -> StemError | None:
    """``exc`` or the first ``StemError`` in its ``__cause__`` chain (a task error wrapping a store error)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, StemError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None
