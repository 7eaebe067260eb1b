"""Every code block in the docs is real.

Python blocks are copied from an example or a test (the quick start, which
``test_readme.py`` executes, is the exception); shell blocks run make
targets that exist or install the package (with extras it declares); text
blocks show messages the library really produces; ``spans`` and
``prometheus`` blocks (a trace drawn as a tree, metric lines) are copied
from a test that asserts them.
"""

import re
import tomllib
from pathlib import Path

import pytest

from asgi_bgtasks import _middleware, _runner

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TESTED = [
    *sorted((ROOT / "examples").rglob("*.py")),
    *sorted((ROOT / "tests").glob("test_*.py")),
]
EXECUTED = {"README.md": 0, "index.md": 0}  # page: index of its executed block
SOURCES = [[line.strip() for line in p.read_text().splitlines()] for p in TESTED]
MAKE_TARGETS = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.M))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = set(PROJECT["optional-dependencies"])


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.DOTALL)


def copied(block: str) -> bool:
    lines = [line.strip() for line in block.strip("\n").splitlines()]
    return any(
        source[start : start + len(lines)] == lines
        for source in SOURCES
        for start in range(len(source) - len(lines) + 1)
    )


def message_patterns() -> list[re.Pattern[str]]:
    """The library's log messages and the testing helper's, as regexes."""
    formats = [
        value
        for module in (_middleware, _runner)
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and " " in value
    ]
    formats.append("%d background task(s) did not succeed: %s")
    return [
        re.compile(
            re.escape(f)
            .replace("%s", ".+")
            .replace("%d", r"\d+")
            .replace("%g", r"[0-9.e+-]+")
            + "$"
        )
        for f in formats
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_python_blocks_are_executed_or_copied_from_tested_files(page: Path) -> None:
    for n, block in enumerate(blocks(page, "python")):
        if EXECUTED.get(page.name) == n:
            continue
        assert copied(block), f"{page.name}: in no example or test:\n{block}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_shell_blocks_run_existing_make_targets_or_install(page: Path) -> None:
    for block in blocks(page, "sh"):
        for line in block.splitlines():
            command = line.split("#")[0].split()
            if command[:1] == ["make"]:
                assert command[1] in MAKE_TARGETS, line
            else:
                assert command[:2] == ["pip", "install"], line
                assert len(command) == 3, line
                package = re.fullmatch(r"'?asgi-bgtasks(\[([a-z,]+)\])?'?", command[2])
                assert package is not None, line
                extras = package[2].split(",") if package[2] else []
                assert set(extras) <= EXTRAS, line


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_span_trees_and_metric_lines_are_copied_from_tests(page: Path) -> None:
    for language in ("spans", "prometheus"):
        for block in blocks(page, language):
            assert copied(block), f"{page.name}: in no example or test:\n{block}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_text_blocks_show_messages_the_library_produces(page: Path) -> None:
    patterns = message_patterns()
    for block in blocks(page, "text"):
        for line in block.strip().splitlines():
            message = re.sub(
                r"^((WARNING|ERROR) asgi_bgtasks: |AssertionError: )", "", line
            )
            assert any(p.match(message) for p in patterns), line


def test_every_example_command_in_the_docs_names_an_example_module() -> None:
    commands = {
        name
        for page in PAGES
        for name in re.findall(r"hypercorn examples\.(\w+):app", page.read_text())
    }

    assert commands >= {
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
