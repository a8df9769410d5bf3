"""Reading and checking the project's Lightning checkpoints, one way for every loader (the defect classifier of
``training.evaluate``, the phase classifier of ``training.phase_model``, the rVAE of ``rvae.encode``).

- ``torch_load``: ``torch.load(..., weights_only=True)`` with one-line reasons: a pickle that references code is
  refused as unsafe (nothing of it ran), a file that is no checkpoint at all is called what it is.
- ``stamp_weights`` (at save time, from the modules' ``on_save_checkpoint``): a sha256 of the weights written into
  the checkpoint's own metadata (``WEIGHTS_SHA256_KEY``).
- ``check_weights`` (at load time): every floating-point weight finite (a diverged run saves NaN weights, which
  would classify every site with probability NaN) and the sha256 equal to the stored one (flipped bytes);
  ``CorruptDataError`` (exit 3) naming the file. A checkpoint written before the hash was stored loads with a
  note on stderr.
"""
from __future__ import annotations

import hashlib
import pickle
import pickletools
import re
import sys
import warnings
import zipfile
from pathlib import Path

import torch

from contract.errors import CorruptDataError, InputError

WEIGHTS_SHA256_KEY = "weights_sha256"
"""Checkpoint entry holding ``weights_sha256(checkpoint["state_dict"])`` (hex), written when the file is saved."""

CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})


def weights_sha256(state_dict: dict) -> str:
    """sha256 over the tensors of ``state_dict`` in sorted key order: each key, dtype, shape and the tensor's
    raw bytes (so a renamed, reshaped or retyped tensor changes the hash as well as changed values)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def stamp_weights(checkpoint: dict) -> None:
    """Write the weights' sha256 into ``checkpoint`` (a module's ``on_save_checkpoint``)."""
    state = checkpoint.get("state_dict")
    if isinstance(state, dict):
        checkpoint[WEIGHTS_SHA256_KEY] = weights_sha256(state)


def torch_load(path: str | Path, device: str | torch.device = "cpu", use: str = "") -> object:
    """``torch.load(path, weights_only=True)``; ``InputError`` with one line naming the file for a file that is
    missing, is a pickle referencing code (refused: loading it could run code; torch's advice to retry with
    ``weights_only=False`` is not relayed), or is no PyTorch checkpoint. ``use``: what to use instead."""
    path = Path(path)
    name = path.name
    use = f"; {use}" if use else ""
    if not path.is_file():
        raise InputError(f"checkpoint {path} not found" if not path.exists() else f"checkpoint {path} is not a file")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the outcome below says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        if _is_text(path):
            raise InputError(f"checkpoint {name}: a text file, not a PyTorch checkpoint{use}") from None
        glob = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if glob:  # weights_only met a reference to code: nothing from the file ran
            raise InputError(f"checkpoint {name}: refused as unsafe, it holds a pickled Python object "
                             f"({glob.group(1).rstrip('.,')}), not only tensors and plain values (loading it could "
                             f"run code){use}") from None
        if references_code(path):
            raise InputError(f"checkpoint {name}: refused as unsafe, it holds pickled Python objects, not only "
                             f"tensors and plain values (loading it could run code){use}") from None
        if _is_pickle(path):
            raise InputError(f"checkpoint {name}: a plain pickle, not a PyTorch checkpoint (torch.save writes a zip "
                             f"archive){use}") from None
        raise InputError(f"checkpoint {name}: not a PyTorch checkpoint (it does not unpickle as one); is it the "
                         f"right file, and complete?") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError,
            TypeError, AttributeError, IndexError, MemoryError, OverflowError) as err:
        if _is_text(path):
            raise InputError(f"checkpoint {name}: a text file, not a PyTorch checkpoint{use}") from None
        raise InputError(f"checkpoint {name}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:120]}); is the file complete?") from None


def check_weights(checkpoint: dict, path: str | Path, stream=None) -> None:
    """``CorruptDataError`` (exit 3) naming the file when a floating-point weight of ``checkpoint["state_dict"]``
    is NaN or infinite, or when the weights' sha256 differs from the one stored at save time; a note on
    ``stream`` (stderr) when the checkpoint stores none (written before the hash was stored)."""
    name = Path(path).name
    state = checkpoint.get("state_dict") or {}
    for key in sorted(state):
        t = state[key]
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise CorruptDataError(f"checkpoint {name}: {bad} of {t.numel()} values of weight {key} are NaN or "
                                       "infinite (a diverged run?); refused: its predictions would be meaningless")
    stored = checkpoint.get(WEIGHTS_SHA256_KEY)
    if stored is None:
        print(f"note: checkpoint {name} stores no weights checksum (written before checksums were stored): its "
              "weights were checked for finiteness only", file=sys.stderr if stream is None else stream)
        return
    actual = weights_sha256(state)
    if str(stored) != actual:
        raise CorruptDataError(f"checkpoint {name}: its weights do not match the sha256 stored when it was saved "
                               f"({str(stored)[:12]}... stored, {actual[:12]}... now): the file is damaged or was "
                               "edited; use an intact copy")


def references_code(path: Path, limit_bytes: int = 1 << 20) -> bool:
    """Whether a plain pickle file names code (GLOBAL, REDUCE, ... opcodes), read with ``pickletools`` (which
    parses and runs nothing), within its first ``limit_bytes``."""
    try:
        with open(path, "rb") as f:
            for op, _, _ in pickletools.genops(f.read(limit_bytes)):
                if op.name in CODE_OPCODES:
                    return True
    except Exception:  # not a pickle, or cut at the limit
        return False
    return False


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # the PROTO opcode


def _is_text(path: Path, probe_bytes: int = 4096) -> bool:
    with open(path, "rb") as f:
        head = f.read(probe_bytes)
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
