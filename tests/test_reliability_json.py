"""Issue 21, finding 1: NaN never reaches a report. Every JSON the project writes goes through
``contract.jsonio`` (NaN/inf -> null, ``allow_nan=False``), and the classify summary counts a site whose
posterior entropy is NaN as uncertain instead of certain (``NaN > threshold`` is False)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from contract.jsonio import json_text, write_json

REPO = Path(__file__).resolve().parents[1]
WRITERS = ("training", "simulate", "features", "inference", "rvae", "contract", "bench")
"""Packages whose JSON writes must be strict (``labelling`` writes its own, through its server's encoder)."""


def test_json_text_writes_null_for_unknown_values(tmp_path):
    value = {"a": float("nan"), "b": [np.float32("inf"), 1.5, np.int64(3)], 2: np.array([np.nan, 0.25]),
             "c": (np.float64(-np.inf),)}
    text = json_text(value, indent=1)
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert parsed == {"a": None, "b": [None, 1.5, 3], "2": [None, 0.25], "c": [None]}
    assert json.loads(write_json(tmp_path / "x.json", {"x": float("nan")}).read_text()) == {"x": None}


def _json_dumps_writes(path: Path) -> list[int]:
    """Lines of ``path`` where ``json.dumps``'s result is written to a file or printed (not hashed or parsed)."""
    tree = ast.parse(path.read_text())
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("write_text", "print") or (
                isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"):
            for arg in node.args:
                for sub in ast.walk(arg):
                    if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "dumps" \
                            and getattr(sub.func.value, "id", None) == "json":
                        lines.append(sub.lineno)
    return lines


def test_no_writer_uses_plain_json_dumps():
    offences = [f"{p.relative_to(REPO)}:{ln}" for pkg in WRITERS for p in sorted((REPO / pkg).rglob("*.py"))
                for ln in _json_dumps_writes(p)]
    assert not offences, "write JSON with contract.jsonio.json_text (NaN -> null): " + ", ".join(offences)


def test_summary_counts_nan_entropy_as_uncertain():
    from inference.classify import HIGH_ENTROPY_NATS, Sites, summarise

    n = 4
    sites = Sites.__new__(Sites)
    fields = {"on_border": np.zeros(n, bool), "has_peak": np.ones(n, bool), "lattice_constant_px": 20.0,
              "lattice_mask": None}
    for k, v in fields.items():
        object.__setattr__(sites, k, v)
    result = {"label": np.zeros(n, int), "entropy": np.array([np.nan, np.nan, np.nan, 0.01])}
    summary = summarise(sites, result, (200, 200), 0.1)
    assert summary["uncertainty"]["fraction_above_threshold"] == 0.75 and HIGH_ENTROPY_NATS > 0.01
    assert summary["uncertainty"]["unreliable"] is True
    json.loads(json_text(summary), parse_constant=lambda c: pytest.fail(f"bare {c}"))
