"""The docs site builds without a single warning, even without ``--quiet``,
and shows what a reader needs: the full API reference, the quick-start tabs,
rendered diagrams, the repository and the version."""

import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import asgi_bgtasks
from asgi_bgtasks import BackgroundTasksMiddleware

pytest.importorskip("mkdocs", reason="the docs extra: make test installs it")
pytest.importorskip("material", reason="the docs extra: make test installs it")
pytest.importorskip("mkdocstrings", reason="the docs extra: make test installs it")

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "docs"))
from vendor_mermaid import VERSION  # noqa: E402  # the release vendored in docs/

PROGRESS = re.compile(
    r"INFO    -  (Cleaning site directory|Building documentation to directory: .*"
    r"|Documentation built in [0-9.]+ seconds)$"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The build's output and its site folder."""
    site = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", site],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return build.stdout + build.stderr, site


def text_of(page: Path) -> str:
    without_tags = re.sub(r"<[^>]+>", "", page.read_text())
    return html.unescape(without_tags)


def test_docs_build_prints_nothing_but_its_progress(built: tuple[str, Path]) -> None:
    output, _ = built
    lines = output.strip().splitlines()

    assert [line for line in lines if not PROGRESS.match(line)] == []
    assert len(lines) == 3


def test_api_page_shows_every_middleware_option_with_its_meaning(
    built: tuple[str, Path],
) -> None:
    _, site = built
    api = text_of(site / "api" / "index.html")

    options = list(inspect.signature(BackgroundTasksMiddleware).parameters)[1:]
    for name in options:
        assert re.search(rf"{name}\s+\(.*?default:", api, re.S), name
    for field in ("scheduled", "retried", "reason", "kwargs"):
        assert re.search(rf"\n\s*{field}\s+\(", api), field


def test_every_page_shows_the_version_and_links_the_repository(
    built: tuple[str, Path],
) -> None:
    _, site = built
    page = (site / "index.html").read_text()

    assert f"asgi-bgtasks {asgi_bgtasks.__version__}" in page
    assert 'href="https://github.com/asgi-bgtasks/asgi-bgtasks"' in page
    assert page.count('class="tabbed-set') == 1  # one set of quick-start tabs


def test_diagrams_render_offline_with_the_mermaid_the_site_ships(
    built: tuple[str, Path],
) -> None:
    _, site = built
    page = (site / "how-it-works" / "index.html").read_text()
    mermaid = (site / "javascripts" / "mermaid.min.js").read_text()

    assert '<pre class="mermaid"><code>' in page  # the theme renders it...
    assert '<script src="../javascripts/mermaid.min.js"></script>' in page
    assert f'"{VERSION}"' in mermaid  # ...with this copy, not one from a CDN
    assert (site / "javascripts" / "mermaid.LICENSE").exists()


def test_api_page_shows_defaults_as_values_not_constant_names(
    built: tuple[str, Path],
) -> None:
    _, site = built
    api = text_of(site / "api" / "index.html")

    assert "max_concurrency: int = 1000," in api
    assert "max_threads: int = min(32, os.cpu_count() + 4)," in api
    assert "DEFAULT_" not in api
