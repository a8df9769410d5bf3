"""The one YAML reader for the project's own configs: bounded, strict, one-line errors.

PyYAML's ``safe_load`` executes no code, but a 1 KB file can still ask for gigabytes: nine levels of aliases
("billion laughs") expand to 10⁹ nodes when anything walks, prints or hashes the result. ``read_yaml_mapping``
therefore refuses, each as a ``ConfigError`` of one short line naming the file and the line:

* aliases (``*name``, and so ``<<: *name`` merges): no config of the project needs them; write the value out;
* a file over ``MAX_CONFIG_BYTES``, nesting deeper than ``MAX_DEPTH``, text that is not UTF-8;
* a key given twice in one mapping (YAML would silently keep the last one);
* ``.nan``, ``.inf`` or a float that overflows to inf (``1.0e999``): no config value is meant to be non-finite.

``brief(value)`` is how a message shows a value: at most a few dozen characters, whatever its size.
``check_keys(node, schema, field)`` refuses unknown keys at every level of a nested mapping.
``load_with_bases(path, ...)`` reads a ``base: other.yaml`` chain (relative paths; a cycle is an error).
"""
from __future__ import annotations

import copy
import difflib
import math
import reprlib
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
"""1 MiB: the largest config here is under 5 KB; a larger file is a mistake (or a data file given as config)."""
MAX_DEPTH = 32
"""Nesting levels: our configs use at most 5. PyYAML composes recursively, so depth is also a stack bound."""
MAX_BASE_CHAIN = 16
"""``base:`` files followed at most (the shipped configs use 2)."""
MAX_MESSAGE_VALUE_CHARS = 80

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = MAX_MESSAGE_VALUE_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3
_repr.maxlong = 40


def brief(value: Any, limit: int = MAX_MESSAGE_VALUE_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters without ever building the whole repr (reprlib stops
    after a few items per level), so a message never formats a huge value."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


MAX_MESSAGE_CHARS = 300


def bounded_message(call: Callable, *args, **kwargs):
    """``call(*args, **kwargs)``, with any ``ConfigError`` it raises cut to ``MAX_MESSAGE_CHARS`` (for validators
    that format a value whole: the file is at most 1 MiB and alias-free, so the value is small enough to format,
    but not to print)."""
    try:
        return call(*args, **kwargs)
    except ConfigError as err:
        text = " ".join(str(err).split())
        if len(text) <= MAX_MESSAGE_CHARS and text == str(err):
            raise
        raise ConfigError(text[:MAX_MESSAGE_CHARS - 3] + "...") from None


class _Refused(yaml.YAMLError):
    """A YAML construct this loader refuses; ``mark`` is where it is."""

    def __init__(self, message: str, mark=None):
        super().__init__(message)
        self.message, self.mark = message, mark


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases, duplicate keys or non-finite floats, and with a depth bound."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(f"YAML aliases (*{event.anchor}) are not accepted in configs (a few lines of aliases "
                           "can expand to billions of values): write the value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _Refused("a mapping key must be a plain value, not a list or mapping", key_node.start_mark)
                key = self.construct_object(key_node)
                if key in seen:
                    raise _Refused(f"key {brief(key)} appears twice in one mapping (YAML would keep only the "
                                   f"last; first at line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(f"{brief(node.value)} is not a finite number (NaN and infinity are not accepted)",
                           node.start_mark)
        return value


StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)


def _where(path: Path, mark) -> str:
    return f"{path}" + (f" line {mark.line + 1}" if mark is not None else "")


def parse_yaml(text: str, path: Path, field: str) -> Any:
    """Parse ``text`` (the contents of ``path``) with ``StrictLoader``; ``ConfigError`` of one line otherwise."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except _Refused as err:
        raise ConfigError(f"{field}: {_where(path, err.mark)}: {err.message}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        detail = " ".join(str(problem).split())[:200]
        raise ConfigError(f"{field}: {_where(path, mark)} is not valid YAML: {detail}") from None
    except RecursionError:
        raise ConfigError(f"{field}: {path} is nested too deeply") from None


def read_yaml(path: str | Path, field: str = "config") -> Any:
    """The parsed contents of a YAML file, read with every bound above."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{field}: no such file {path}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{field}: {path} is {size} bytes, over the {MAX_CONFIG_BYTES} bytes a config may have "
                          "(is it a config?)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{field}: cannot read {path} ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{field}: {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    return parse_yaml(text, path, field)


def read_yaml_mapping(path: str | Path, field: str = "config") -> dict:
    """``read_yaml`` of a file that must hold a mapping."""
    raw = read_yaml(path, field)
    if not isinstance(raw, dict):
        raise ConfigError(f"{field}: {path} must hold a mapping, got {type(raw).__name__}")
    return raw


# ----------------------------------------------------------------------------------------------- keys
class Each:
    """Schema of a mapping whose keys are names chosen by the user (hosts, scans): every value is ``schema``."""

    def __init__(self, schema):
        self.schema = schema


class ListOf:
    """Schema of a list whose items are each ``schema``."""

    def __init__(self, schema):
        self.schema = schema


ANY = None
"""Schema of a leaf: any value (its type and range are checked by the config's own validation)."""


def key_text(key: Any) -> str:
    """A key as it appears in a dotted field name: itself when a short string, else its brief repr."""
    return key if isinstance(key, str) and len(key) <= 60 and key.isprintable() else brief(key, 60)


def check_keys(node: Any, schema, field: str = "") -> None:
    """``ConfigError`` for the first key that ``schema`` does not know, at any depth, with the closest known
    key as a hint. ``schema``: ``ANY``, a dict of key -> schema, ``Each(schema)`` or ``ListOf(schema)``. A node
    of another type than its schema expects is left to the validation that reads it (which names the type)."""
    if schema is ANY:
        return
    if isinstance(schema, ListOf):
        if isinstance(node, list):
            for i, item in enumerate(node):
                check_keys(item, schema.schema, f"{field}[{i}]")
        return
    if not isinstance(node, dict):
        return
    if isinstance(schema, Each):
        for key, value in node.items():
            check_keys(value, schema.schema, f"{field}.{key_text(key)}" if field else key_text(key))
        return
    for key, value in node.items():
        name = key_text(key)
        dotted = f"{field}.{name}" if field else name
        if key not in schema:
            known = [str(k) for k in schema]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"{dotted}: unknown key; {hint}")
        check_keys(value, schema[key], dotted)


# ----------------------------------------------------------------------------------------------- base chain
def deep_merge(base: dict, override: dict, replace: tuple[str, ...] = ()) -> dict:
    """``override`` on top of ``base``, mappings merged key by key, anything else replaced; the top-level keys in
    ``replace`` are replaced as a whole (e.g. a dataset's ``selection``: what the child wrote is what it gets)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in replace and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_with_bases(path: str | Path, field: str = "config", replace: tuple[str, ...] = (),
                    on_merge: Callable[[dict, dict, Path], dict] | None = None,
                    _chain: tuple[Path, ...] = ()) -> dict:
    """Read ``path``; when it has ``base: other.yaml`` (relative to it), read that first (recursively) and merge
    this file on top (``deep_merge`` with ``replace``). ``on_merge(merged, raw, path)`` may adjust each merge.
    A chain that comes back to a file already in it, or longer than ``MAX_BASE_CHAIN``, is a ``ConfigError``."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        names = " -> ".join(p.name for p in (*_chain, resolved))
        raise ConfigError(f"base: {path} includes itself ({names})")
    if len(_chain) >= MAX_BASE_CHAIN:
        raise ConfigError(f"base: more than {MAX_BASE_CHAIN} files in the base chain of {_chain[0]}")
    raw = read_yaml_mapping(path, field)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base: must be the path of another config file, got {brief(base)} in {path}")
    merged = deep_merge(load_with_bases(path.parent / base, field, replace, on_merge, (*_chain, resolved)), raw,
                        replace)
    return on_merge(merged, raw, path) if on_merge else merged


def check_config_args(argv: list[str], option: str = "--config") -> None:
    """Read every ``--config FILE`` (or ``--config=FILE``) of a command line with ``read_yaml``, so that a tool
    that parses them itself (LightningCLI's jsonargparse) never sees an alias bomb, a duplicate key or a NaN:
    ``ConfigError`` naming the file and line first. Files that do not exist are left to the tool's own message."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == option and i + 1 < len(argv) else (
            arg[len(option) + 1:] if arg.startswith(option + "=") else None)
        if value is not None and Path(value).is_file():
            read_yaml(value, option)
