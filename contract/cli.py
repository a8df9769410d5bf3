"""One command-line style for every stage: argparse subcommands, ``--help`` listing them, ``--debug``, and
failures reported as one line with the exit codes of ``contract.errors``.

Each stage's ``__main__`` builds an ``argparse`` parser with subcommands and calls
``run_command(main, argv, prog)``; ``with_default_subcommand`` keeps the older forms (``python -m simulate
--config ...``) working by inserting the stage's default subcommand.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Sequence

from .errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    InputError,
    StemError,
)

DEBUG_HELP = "print the traceback of a failure (otherwise one line on stderr)"


def stage_parser(prog: str, description: str):
    """``(parser, subparsers)`` of a stage's command line, the one style of every stage: ``--debug`` (a traceback
    with the error) and a required ``SUBCOMMAND`` that ``--help`` lists."""

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")


def with_default_subcommand(argv: Sequence[str], default: str) -> list[str]:
    """``argv`` with ``default`` inserted in front when it starts with an option other than ``-h/--help``."""
    argv = list(argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        return [default, *argv]
    return argv


def check_output_path(path, flag: str = "--out", kind: str = "directory") -> Path:
    """``path`` as a ``Path`` when an output ``kind`` ("directory", which includes a zarr store, or "file") can be
    written there; ``InputError`` (exit 2) naming ``flag`` otherwise, so that a command fails before its work
    rather than after it: ``path`` is a file (or, for a file, a directory), lies under a file, or its nearest
    existing folder cannot be written (read-only: a real write is tried, which also holds for root and for
    read-only file systems; ``O_TMPFILE`` leaves nothing behind)."""
    path = Path(path)
    if path.exists():
        if kind == "directory" and not path.is_dir():
            raise InputError(f"{flag} {path} is a file, not a directory: give a new or existing directory")
        if kind == "file" and path.is_dir():
            raise InputError(f"{flag} {path} is a directory, not a file name")
    folder = path if kind == "directory" and path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{flag} {path} lies under {folder}, which is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"{flag} {path}: cannot write in {folder} ({reason})") from None
    return path


def check_output_args(args, flags: dict[str, str] | None = None) -> None:
    """``check_output_path`` for each output option of a parsed ``args`` that is set: ``flags`` maps the attribute
    to its kind (default ``{"out": "directory", "run_dir": "directory"}``)."""
    for attr, kind in (flags or {"out": "directory", "run_dir": "directory"}).items():
        value = getattr(args, attr, None)
        if value is not None:
            check_output_path(value, "--" + attr, kind)


def finite_float(text: str) -> float:
    """argparse ``type`` for a physical quantity: a finite float (``inf`` and ``nan`` parse as floats but size
    nothing); argparse turns the ``ValueError`` into a one-line usage error (exit 2)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text}")
    return value


TEXT_OPTIONS = ("--config", "--cluster-config", "--cluster_config")
"""Options whose value is a text (YAML) file: checked to be UTF-8 before a command starts."""


def check_text_files(argv: Sequence[str], options: Sequence[str] = TEXT_OPTIONS) -> None:
    """``InputError`` (exit 2) naming the option and file when the value of one of ``options`` in ``argv`` is a
    file that is not UTF-8 text (a config saved in another encoding, or a binary file given as config)."""
    for i, arg in enumerate(argv):
        flag, _, value = str(arg).partition("=")
        if flag not in options:
            continue
        if not value:
            value = str(argv[i + 1]) if i + 1 < len(argv) else ""
        path = Path(value)
        if not value or not path.is_file():
            continue  # a missing file is each command's own one-line error
        try:
            with open(path, "rb") as f:
                f.read().decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{flag} {path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                             f"{err.start}); save the file as UTF-8") from None


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
    interrupt = _Interrupt(prog, stream)
    previous = interrupt.install()
    environ = dict(os.environ)
    try:
        check_text_files(argv)
        code = main(argv)
        return EXIT_OK if code is None else int(code)
    except SystemExit as exc:  # argparse's own usage errors (exit 2) and --help (exit 0)
        if isinstance(exc.code, str):
            print(f"error: {one_line(exc.code)}", file=stream)
            return EXIT_BAD_INPUT
        return EXIT_OK if exc.code is None else int(exc.code)
    except KeyboardInterrupt:
        interrupt.report()
        return EXIT_INTERRUPTED
    except Exception as exc:
        if interrupt.count:  # a failure caused by the interrupt (a task cancelled, a pipe closed): still Ctrl-C
            interrupt.report()
            return EXIT_INTERRUPTED
        if debug:
            traceback.print_exc(file=stream)
        expected = expected_cause(exc)
        if expected is not None:
            print(f"error: {one_line(expected)}", file=stream)
            return expected.exit_code
        if isinstance(exc, UnicodeDecodeError):  # a text input that is not UTF-8 (its option was not a --config)
            print(f"error: a text input is not UTF-8 ({one_line(exc)}); save it as UTF-8", file=stream)
            return EXIT_BAD_INPUT
        # a bug or an unforeseen failure: one line, the traceback on request
        print(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the traceback)",
              file=stream)
        return EXIT_UNEXPECTED
    finally:
        if previous is not None and not interrupt.count:  # once interrupted, a later Ctrl-C (at exit) stays quiet
            signal.signal(signal.SIGINT, previous)
        leave_no_process_state(environ)


def leave_no_process_state(environ: dict[str, str]) -> None:
    """Leave the interpreter as a command found it when it runs in-process (a notebook, a test, ``demo``).

    Lightning's DDP setup exports ``MASTER_ADDR``/``MASTER_PORT`` (and ranks) into ``os.environ`` and keeps the
    rendezvous server listening on that port until the process group is destroyed. Left behind, every later run
    in this interpreter, and every child process or Slurm job inheriting its environment, tries to listen on the
    same port and fails with EADDRINUSE. ``environ``: ``dict(os.environ)`` from before the command.
    """
    dist = sys.modules.get("torch.distributed")  # never imports torch: only a command that used it has state
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in set(os.environ) - set(environ):
        del os.environ[key]
    for key, value in environ.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


class _Interrupt:
    """Ctrl-C any number of times ends in one line and exit 130: the first raises ``KeyboardInterrupt`` (the
    command unwinds and cleans up); a second one, while it unwinds or after the line was printed, ends the process
    at once (``os._exit(130)``) instead of raising inside cleanup code, which would print a raw traceback."""

    def __init__(self, prog: str, stream):
        self.prog, self.stream, self.count, self.reported = prog, stream, 0, False

    def install(self):
        """Install the handler (main thread only); returns the previous handler, or None when not installed."""
        try:
            return signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread of the interpreter
            return None

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        self.report()
        try:
            self.stream.flush()
        except Exception:  # a closed stream: the exit code still says it
            pass
        os._exit(EXIT_INTERRUPTED)

    def report(self) -> None:
        if not self.reported:
            self.reported = True
            print(f"error: {self.prog}: interrupted (Ctrl-C)", file=self.stream)


def expected_cause(exc: BaseException) -> StemError | None:
    """``exc`` or the first ``StemError`` in its ``__cause__`` chain (a task error wrapping a store error)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, StemError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None
