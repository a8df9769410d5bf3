"""Moved to ``kernels.zernike``; this module re-exports its public names for code outside the repository."""
from kernels.zernike import *  # noqa: F401,F403
