"""YAML for configs and command-line values: YAML 1.2 (ruamel.yaml, pure Python), JSON's types only.

``1e-4`` is a number and ``no`` a string (YAML 1.2); a tag that builds anything but a string, number,
true/false, null, list or mapping (``!!python/object``, ``!!binary``, ``!!set``, dates, ...) is refused, and so is
a key given twice in one mapping. Every mistake is one :class:`UserError` line naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from whisperkd.errors import UserError


class _Refused(ConstructorError):
    """A tag a config cannot hold, or a key given twice."""


class _Constructor(SafeConstructor):
    """ruamel's safe constructor, less what JSON cannot hold; a mapping may not give a key twice."""

    def check_mapping_key(self, node, key_node, mapping, key, value) -> bool:
        if key in mapping:
            raise _Refused(None, None, f"duplicate key {key!r}; give each key once", key_node.start_mark)
        return True


def _refuse(constructor, node):
    tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
    shown = f" {node.value!r}" if isinstance(node.value, str) else ""
    raise _Refused(None, None, f"{tag}{shown} refused: a config holds only strings, numbers, true/false, null, "
                               "lists and mappings (quote a value to keep it as text)", node.start_mark)


for _tag in ("binary", "timestamp", "set", "omap", "pairs"):
    _Constructor.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse)
_Constructor.add_constructor(None, _refuse)  # any other tag: !!python/object, !custom, ...


def load_yaml(text: str) -> Any:
    """One YAML 1.2 document as JSON's types (dict, list, str, int, float, bool, None)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _Constructor
    return yaml.load(text)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def parse_value(text: str) -> Any:
    """A command-line value as a YAML scalar or flow list: ``1e-4`` -> 1e-4, ``[0,3]`` -> [0, 3], ``null``;
    text that is no YAML stays text. UserError for a refused tag (``!!binary ...``) or a key given twice."""
    try:
        return load_yaml(text) if text.strip() else None
    except _Refused as err:
        raise UserError(f"value {text!r}: {_one_line(err.problem)}") from None
    except YAMLError:
        return text


def read_yaml_file(path: Path) -> Any:
    """The document in ``path``; UserError naming the file (and line) when it is not UTF-8, not YAML, holds
    a refused tag or gives a key twice."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x}); save it as UTF-8") from None
    try:
        return load_yaml(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: {_one_line(err.problem or err.context or 'invalid YAML')}") from None
    except YAMLError as err:  # e.g. a control character
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid YAML"
        raise UserError(f"{path}: {_one_line(first)}") from None
