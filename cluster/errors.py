"""Exceptions raised by the cluster layer."""
from __future__ import annotations

from contract.errors import EXIT_CLUSTER, StemError


class ClusterError(StemError, RuntimeError):
    """A cluster could not be configured, submitted or started (bad config, Slurm refused, timeout)."""

    exit_code = EXIT_CLUSTER


class TaskError(RuntimeError):
    """A task running on the cluster raised; ``key`` names the task, ``__cause__`` is the original error."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key
