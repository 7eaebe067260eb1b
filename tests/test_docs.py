"""Every code block in the docs is real.

Python blocks are copied from an example or a test; the quick starts (the
docs home's tabs, each guide's opening, the README's) are whole files that
``test_quickstarts.py`` serves. Shell blocks run make targets that exist,
install the package (with extras it declares), or serve and call a quick
start; text blocks show messages the library really produces; ``spans`` and
``prometheus`` blocks (a trace drawn as a tree, metric lines) are copied
from a test that asserts them.
"""

import re
import shlex
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
SOURCES = [[line.strip() for line in p.read_text().splitlines()] for p in TESTED]
MAKE_TARGETS = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.M))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = set(PROJECT["optional-dependencies"])
SOURCE_URL = PROJECT["urls"]["Source"]
INSTALLS = {"asgi-bgtasks", ".", f"git+{SOURCE_URL}"}  # what `pip install` may name
QUICK_START_COMMANDS = [
    ["hypercorn", "main:app"],
    ["curl", "-X", "POST", "http://127.0.0.1:8000/register?email=ann@example.com"],
]
# The docs home's tabs, in order: (tab title, examples/quickstart_<name>.py)
QUICK_STARTS = [
    ("FastAPI", "fastapi"),
    ("Django", "django"),
    ("Starlette", "starlette"),
    ("Quart", "quart"),
    ("Litestar", "litestar"),
    ("Bare ASGI", "bare"),
]


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.DOTALL)


def copied(block: str) -> bool:
    lines = [line.strip() for line in block.strip().splitlines()]
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
    for block in blocks(page, "python"):
        assert copied(block), f"{page.name}: in no example or test:\n{block}"


def quick_start(name: str) -> str:
    return (ROOT / "examples" / f"quickstart_{name}.py").read_text()


@pytest.mark.parametrize("name", [name for _, name in QUICK_STARTS])
def test_every_guide_opens_with_its_whole_quick_start_file(name: str) -> None:
    first = blocks(ROOT / "docs" / "frameworks" / f"{name}.md", "python")[0]

    assert first == quick_start(name)


def test_docs_home_has_a_tab_per_framework_each_a_whole_quick_start_file() -> None:
    page = (ROOT / "docs" / "index.md").read_text()
    tabs = re.findall(
        r'^=== "([^"\n]+)"\n\n    ```python\n(.*?)    ```$', page, re.S | re.M
    )

    assert [title for title, _ in tabs] == [title for title, _ in QUICK_STARTS]
    for (_, code), (_, name) in zip(tabs, QUICK_STARTS, strict=True):
        assert re.sub(r"^    ", "", code, flags=re.M) == quick_start(name)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_shell_blocks_make_install_or_serve_a_quick_start(page: Path) -> None:
    for block in blocks(page, "sh"):
        for line in block.splitlines():
            command = shlex.split(line, comments=True)
            if command[:1] == ["make"]:
                assert command[1] in MAKE_TARGETS, line
            elif command[:2] == ["pip", "install"]:
                assert len(command) == 3, line
                package = re.fullmatch(r"asgi-bgtasks\[([a-z,]+)\]", command[2])
                if package is None:
                    assert command[2] in INSTALLS, line
                else:
                    assert set(package[1].split(",")) <= EXTRAS, line
            else:
                assert command in QUICK_START_COMMANDS, line


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
