"""Vendor mermaid into the docs, so that diagrams render offline.

The theme would fetch mermaid from a CDN when a page is viewed; with
``docs/javascripts/mermaid.min.js`` listed in ``extra_javascript`` it uses
this copy instead. Run ``python docs/vendor_mermaid.py`` to (re)make it: it
takes the pinned release from the npm registry (``npm pack``, which checks
the package's integrity hash) and copies its ``dist/mermaid.min.js`` and its
licence here. Not part of the site (``exclude_docs`` in mkdocs.yml).
"""

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "11.6.0"  # the major version the theme (mkdocs-material 9) expects
HERE = Path(__file__).parent / "javascripts"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            ["npm", "pack", f"mermaid@{VERSION}", "--silent"],
            cwd=folder,
            check=True,
            timeout=300,
        )
        with tarfile.open(Path(folder) / f"mermaid-{VERSION}.tgz") as package:
            package.extractall(folder, filter="data")
        dist = Path(folder) / "package"
        HERE.mkdir(exist_ok=True)
        shutil.copy(dist / "dist" / "mermaid.min.js", HERE / "mermaid.min.js")
        shutil.copy(dist / "LICENSE", HERE / "mermaid.LICENSE")
    print(f"mermaid {VERSION} -> {HERE / 'mermaid.min.js'}", file=sys.stderr)


if __name__ == "__main__":
    main()
