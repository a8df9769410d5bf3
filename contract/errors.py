"""The kinds of failure every command reports in one line, their exit codes, and ``run_command``.

=========  ====================================  ========================================================
exit code  kind                                  examples
=========  ====================================  ========================================================
0          success
1          unexpected error (a bug)              an exception nobody expected: rerun with ``--debug``
2          ``InputError`` (bad input)            unreadable or wrong file, bad option or config field,
                                                 an image with no lattice, a wrong checkpoint
3          ``CorruptDataError``                  a store shard or chunk that does not decode or does not
                                                 match its checksum: ``python -m simulate verify``
4          ``UnseenContextError``                a context (host, dopant, energy, detector) the model was
                                                 never trained on (``--allow-unseen-context``)
5          ``ClusterError``                      the Dask cluster or Slurm could not run the work
130        interrupted (Ctrl-C)
=========  ====================================  ========================================================

A command's ``main(argv)`` raises these; ``contract.cli.run_command`` turns them into ``error: ...`` on stderr
and the exit code, and prints a traceback only with ``--debug``.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_CORRUPT_DATA = 3
EXIT_UNSEEN_CONTEXT = 4
EXIT_CLUSTER = 5
EXIT_INTERRUPTED = 130


class StemError(Exception):
    """An expected failure with a message that says what is wrong and what to do."""

    exit_code = EXIT_UNEXPECTED


class InputError(StemError, ValueError):
    """Bad input: a file, an option, a config field, an image or a checkpoint that cannot be used."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A config that cannot be used; the message starts with the dotted name of the field."""


class CorruptDataError(StemError):
    """Stored data that do not decode or do not match their checksum."""

    exit_code = EXIT_CORRUPT_DATA


class UnseenContextError(StemError):
    """A context outside the model's training cases."""

    exit_code = EXIT_UNSEEN_CONTEXT
