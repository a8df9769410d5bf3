"""Moved to ``kernels.lattice``; this module re-exports its public names for code outside the repository."""
from kernels.lattice import *  # noqa: F401,F403
