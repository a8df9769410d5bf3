"""Moved to ``kernels.symmetry``; this module re-exports its public names for code outside the repository."""
from kernels.symmetry import *  # noqa: F401,F403
