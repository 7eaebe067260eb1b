"""The package's modules import each other in one direction only: no import
circle, counting imports made inside functions too."""

import ast
from pathlib import Path

import asgi_bgtasks

PACKAGE = Path(asgi_bgtasks.__file__).parent


def imports_of(module: Path) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:  # from . import x: a module, or __init__'s
                names = {alias.name for alias in node.names}
                modules = {name for name in names if (PACKAGE / f"{name}.py").exists()}
                found |= modules or {"__init__"}
            else:
                found.add(node.module.split(".")[0])
    return found


def test_no_module_of_the_package_imports_itself_back() -> None:
    graph = {path.stem: imports_of(path) for path in PACKAGE.glob("*.py")}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for module in graph.get(start, ()):
            if module == target or (
                module not in seen and reaches(module, target, seen | {module})
            ):
                return True
        return False

    circles = sorted(module for module in graph if reaches(module, module, set()))
    assert circles == []
