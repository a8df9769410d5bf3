"""Fuzz of the config readers (issue 21): seeded, bounded random damage to the tiny dataset config, its YAML text,
and the plane-group and 4D-STEM configs. Every outcome must be clean: the config is accepted, or refused with a
``ConfigError`` of one short line; never another exception, never a message that formats a huge value."""
from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import yaml

from contract.errors import ConfigError
from contract.yamlsafe import read_yaml
from simulate import config as dataset
from simulate.fourdstem import load as load_fourdstem
from simulate.planegroups import load_config as load_planegroups

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "configs" / "dataset"
MAX_MESSAGE_CHARS = 400
JUNK = [None, True, False, -1, 0, 1, 2.5, -0.0, 10**30, -(10**30), 1e308, float("nan"), float("inf"), "", "all",
        "x" * 100_000, [], {}, [1, 2, 3], [[1, 2]], {"a": 1}, [None], ["WSe2", "Cr"], list(range(10_000)),
        {"HAADF": 1}, [0.0, float("nan")], [5, 1], [1e9, 1e12]]


def _paths(node, prefix=()):
    """Every (path, node) inside a nested dict/list."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _mutate(cfg: dict, rng: random.Random) -> None:
    path, _ = rng.choice([p for p in _paths(cfg) if p[0]])
    parent = cfg
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    action = rng.random()
    if action < 0.6:
        parent[last] = copy.deepcopy(rng.choice(JUNK))
    elif action < 0.75 and isinstance(parent, dict):
        del parent[last]
    elif action < 0.9 and isinstance(parent, dict):
        parent[str(last) + rng.choice(["s", "_", "x"])] = parent.pop(last)  # a misspelt key
    elif isinstance(parent, list):
        parent.append(copy.deepcopy(rng.choice(JUNK)))
    else:
        parent[last] = {"nested": copy.deepcopy(rng.choice(JUNK))}


def _clean(call) -> bool:
    """True when accepted; a refusal must be one short ConfigError line; anything else fails the test."""
    try:
        call()
        return True
    except ConfigError as err:
        text = str(err)
        assert "\n" not in text and len(text) < MAX_MESSAGE_CHARS, text[:1000]
        return False


@pytest.fixture(scope="module")
def tiny_raw() -> dict:
    return dataset.load_yaml(DATASETS / "tiny.yaml")


def test_fuzzed_dataset_configs_end_cleanly(tiny_raw):
    rng = random.Random(21)
    refused = 0
    for _ in range(400):
        cfg = copy.deepcopy(tiny_raw)
        for _ in range(rng.randint(1, 3)):
            _mutate(cfg, rng)
        refused += not _clean(lambda: dataset.resolve(cfg))
    assert refused > 300  # almost every mutation breaks something; the test is not vacuous


def test_fuzzed_yaml_text_ends_cleanly(tmp_path):
    rng = random.Random(7)
    text = (DATASETS / "tiny.yaml").read_text().replace("base: paper.yaml", f"base: {DATASETS / 'paper.yaml'}")
    alphabet = ": -[]{}*&!|>\n\t#'\",x0.e+%@`\\\xff"
    path = tmp_path / "fuzz.yaml"
    for _ in range(250):
        chars = list(text)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.4:
                chars[i] = rng.choice(alphabet)
            elif op < 0.7:
                chars.insert(i, rng.choice(alphabet))
            else:
                del chars[i]
        path.write_bytes("".join(chars).encode("utf-8", "surrogateescape"))
        _clean(lambda: dataset.load(path))


@pytest.mark.parametrize("name,loader", [("planegroups-demo.yaml", load_planegroups),
                                         ("fourdstem-tiny.yaml", load_fourdstem)])
def test_fuzzed_planegroup_and_fourdstem_configs_end_cleanly(tmp_path, name, loader):
    rng = random.Random(3)
    raw = read_yaml(DATASETS / name)
    path = tmp_path / name
    for _ in range(150):
        cfg = copy.deepcopy(raw)
        for _ in range(rng.randint(1, 2)):
            _mutate(cfg, rng)
        path.write_text(yaml.safe_dump(cfg))
        _clean(lambda: loader(path))
