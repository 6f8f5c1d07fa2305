"""Imports point down: utils -> layers -> models -> data / tasks -> engine -> train.py / eval.py.

Walks every module of the package with `ast` and fails when one imports a package of its own level or
above (imports under `if TYPE_CHECKING:` are annotations only and do not count).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aaconv"
# Level of each sub-package; a module may import its own sub-package and lower levels only.
LEVELS = {"errors": 0, "utils": 1, "layers": 2, "models": 3, "data": 3, "tasks": 4, "engine": 5, "runs": 6}
# Below it, but still not imported: the engine receives a task (and the task's model), it never builds one.
NEVER_IMPORTS = {"engine": {"models", "tasks"}}


def runtime_imports(tree: ast.Module) -> list[str]:
    """Absolute `aaconv.*` module names imported outside `if TYPE_CHECKING:` blocks."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [name for name in names if name == "aaconv" or name.startswith("aaconv.")]


def subpackage(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if subpackage(p) in LEVELS)


def test_every_subpackage_has_a_level() -> None:
    names = {subpackage(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert names <= set(LEVELS), f"give {sorted(names - set(LEVELS))} a level in LEVELS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    own = subpackage(path)
    upward = []
    for name in runtime_imports(ast.parse(path.read_text())):
        target = name.split(".")[1] if "." in name else "aaconv"
        if target != own and (target not in LEVELS or LEVELS[target] >= LEVELS[own]):
            upward.append(name)
        elif target in NEVER_IMPORTS.get(own, ()):
            upward.append(name)
    assert not upward, f"{path.relative_to(PACKAGE)} imports {upward}, which are not below {own!r} or not for it"


def test_walker_sees_upward_imports() -> None:
    tree = ast.parse(
        "import torch\nfrom aaconv.tasks import build_task\nif TYPE_CHECKING:\n    from aaconv.models import x\n"
    )
    assert runtime_imports(tree) == ["aaconv.tasks"]
