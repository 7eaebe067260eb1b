"""The README is the package's description on the package index: its quick
start is a whole tested file and every link is absolute and leads somewhere."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
URLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
# The docs as the documentation site serves them (directory URLs).
DOCS_SITE = URLS["Documentation"] + "/en/latest/"
LINKS = re.findall(r"\]\(([^)]*)\)", README)


def test_readme_quick_start_is_the_whole_fastapi_quick_start_file() -> None:
    first = re.search(r"```python\n(.*?)```", README, re.DOTALL)

    assert first is not None
    assert first.group(1) == (ROOT / "examples" / "quickstart_fastapi.py").read_text()


def test_package_metadata_names_every_project_url() -> None:
    assert set(URLS) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in URLS.values())


def test_readme_links_are_absolute() -> None:
    assert LINKS
    relative = [link for link in LINKS if not link.startswith("https://")]

    assert relative == []


def test_readme_links_into_the_docs_lead_to_pages_that_exist() -> None:
    pages = [link[len(DOCS_SITE) :] for link in LINKS if link.startswith(DOCS_SITE)]

    assert len(pages) > 10
    for page in pages:
        path = page.split("#")[0].rstrip("/") or "index"
        assert (ROOT / "docs" / f"{path}.md").exists(), page


def test_readme_links_into_the_repository_name_files_that_exist() -> None:
    files = [
        link.split("/blob/main/")[1]
        for link in LINKS
        if link.startswith(URLS["Source"] + "/blob/main/")
    ]

    assert files == ["CHANGELOG.md"]
    assert all((ROOT / name).exists() for name in files)


def test_the_docs_host_the_readme_links_to_builds_the_site_from_this_repository() -> (
    None
):
    config = (ROOT / ".readthedocs.yaml").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    assert URLS["Documentation"] == "https://asgi-bgtasks.readthedocs.io"
    assert "configuration: mkdocs.yml" in config
    assert "fail_on_warning: true" in config
    assert "- docs" in config
    assert "docs" in extras
