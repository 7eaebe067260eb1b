"""Every code block in the docs is real.

A whole file (a block that opens with its module docstring) is never pasted
into a page: the page includes it (``--8<-- "examples/..."``, the
pymdownx.snippets syntax), so the site shows the file the tests run. The
quick starts (the docs home's tabs, each guide's opening) are included
whole files that ``test_quickstarts.py`` serves; the README, which the
package index shows as it is, holds a verbatim copy of the FastAPI one.
Other Python blocks are excerpts, copied from an example or a test that the
page names. Shell blocks run make targets that exist,
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
from test_example_django_tasks import PROJECT as DJANGO_PROJECT
from test_quickstarts import FRAMEWORKS
from test_testing_docs import RECIPES

from asgi_bgtasks import _middleware, _runner

ROOT = Path(__file__).parent.parent
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
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
    ["fastapi", "run", "main.py"],
    ["hypercorn", "mysite.asgi:application"],  # the Django tasks project
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


INCLUDE = re.compile(r'--8<-- "([^"]+)"')


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.DOTALL)


def included(block: str) -> str | None:
    """The file a block includes, or None if it holds code of its own."""
    match = INCLUDE.fullmatch(block.strip())
    return match[1] if match else None


def excerpts(page: Path) -> list[str]:
    return [block for block in blocks(page, "python") if included(block) is None]


def includes(page: Path) -> list[str]:
    return [name for block in blocks(page, "python") if (name := included(block))]


def sources_of(block: str) -> list[Path]:
    """The tested files that hold ``block`` (its lines, stripped, in a row)."""
    lines = [line.strip() for line in block.strip().splitlines()]
    return [
        path
        for path, source in zip(TESTED, SOURCES, strict=True)
        if any(
            source[start : start + len(lines)] == lines
            for start in range(len(source) - len(lines) + 1)
        )
    ]


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
def test_python_excerpts_are_copied_from_tested_files(page: Path) -> None:
    for block in excerpts(page):
        assert copied(block), f"{page.name}: in no example or test:\n{block}"


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_whole_files_are_included_never_pasted(page: Path) -> None:
    pasted = [b for b in excerpts(page) if b.lstrip().startswith('"""')]

    assert pasted == [], f"{page.name}: include these with --8<--"


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_excerpts_name_a_file_they_are_copied_from(page: Path) -> None:
    text = page.read_text()
    for block in excerpts(page):
        names = [str(path.relative_to(ROOT)) for path in sources_of(block)]
        assert any(name in text for name in names), f"{page.name}: name one of {names}"


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_included_files_are_examples_that_a_test_runs(page: Path) -> None:
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    run = {f"examples/quickstart_{name}.py" for name in FRAMEWORKS} | {
        f"examples/testing/{recipe}" for recipe, _ in RECIPES
    }
    run |= {str(path.relative_to(ROOT)) for path in DJANGO_PROJECT.rglob("*.py")}
    for name in includes(page):
        path = ROOT / name
        assert path.is_file(), name
        assert path.relative_to(ROOT).parts[0] == "examples", name
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        assert name in run or module in tests, f"no test runs {name}"


@pytest.mark.parametrize("name", [name for _, name in QUICK_STARTS])
def test_every_guide_opens_with_its_included_quick_start_file(name: str) -> None:
    first = blocks(ROOT / "docs" / "frameworks" / f"{name}.md", "python")[0]

    assert included(first) == f"examples/quickstart_{name}.py"


def test_docs_home_has_a_tab_per_framework_each_an_included_quick_start_file() -> None:
    page = (ROOT / "docs" / "index.md").read_text()
    tabs = re.findall(
        r'^=== "([^"\n]+)"\n\n    ```python\n(.*?)    ```$', page, re.S | re.M
    )

    assert [title for title, _ in tabs] == [title for title, _ in QUICK_STARTS]
    for (_, code), (_, name) in zip(tabs, QUICK_STARTS, strict=True):
        assert included(code) == f"examples/quickstart_{name}.py"


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


def test_benchmarks_page_opens_with_its_results() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    headings = re.findall(r"^## (.+)$", page, re.M)

    assert headings[0] == "Results"
    assert page.index("<!-- bench:start -->") < page.index("## Method")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_pages_refer_to_nothing_a_reader_of_the_project_cannot_see(
    page: Path,
) -> None:
    text = page.read_text()

    assert re.findall(r"\bissue \d+|DESIGN\.md", text, re.I) == []
