"""The guides' code is real: each Python block is copied from a tested file."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
GUIDES = [
    *sorted((ROOT / "docs" / "frameworks").glob("*.md")),
    ROOT / "docs" / "coming-from-fastapi.md",
]
TESTED = [
    *sorted((ROOT / "examples").rglob("*.py")),
    *sorted((ROOT / "tests").glob("test_*.py")),
]


def stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip("\n").splitlines()]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)


def appears_in(block: list[str], source: list[str]) -> bool:
    return any(
        source[start : start + len(block)] == block
        for start in range(len(source) - len(block) + 1)
    )


SOURCES = {path: stripped_lines(path.read_text()) for path in TESTED}


@pytest.mark.parametrize("page", GUIDES, ids=lambda page: page.stem)
def test_every_python_block_is_copied_from_an_example_or_a_test(page: Path) -> None:
    blocks = python_blocks(page)

    assert blocks, f"{page.name} shows no code"
    for block in blocks:
        lines = stripped_lines(block)
        assert any(appears_in(lines, source) for source in SOURCES.values()), (
            f"{page.name}: this block is in no example or test:\n{block}"
        )


def test_every_example_command_in_the_docs_names_an_example_module() -> None:
    pages = [*GUIDES, ROOT / "README.md"]
    commands = {
        name
        for page in pages
        for name in re.findall(r"hypercorn examples\.(\w+):app", page.read_text())
    }

    assert commands == {
        "bare",
        "django_app",
        "quart_app",
        "starlette_app",
        "fastapi_app",
        "litestar_app",
    }
    for name in commands:
        module = ROOT / "examples" / name
        assert module.with_suffix(".py").exists() or (module / "__init__.py").exists()
