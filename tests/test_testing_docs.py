"""The whole test files the docs show (``examples/testing/``) pass as a
reader runs them: saved beside the quick start they test, saved as
``main.py``, in a folder of their own, under plain ``pytest`` with no
configuration (so pytest-asyncio in its default, strict mode)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# (test file in examples/testing/, the quick start it tests)
RECIPES = [
    ("test_main.py", "quickstart_fastapi.py"),
    ("test_main_testclient.py", "quickstart_fastapi.py"),
]


@pytest.mark.parametrize(("recipe", "quick_start"), RECIPES)
def test_recipe_passes_beside_its_quick_start_under_plain_pytest(
    recipe: str, quick_start: str, tmp_path: Path
) -> None:
    shutil.copy(ROOT / "examples" / quick_start, tmp_path / "main.py")
    shutil.copy(ROOT / "examples" / "testing" / recipe, tmp_path / recipe)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "mode=strict" in run.stdout.lower().replace("mode.strict", "strict")
    assert " passed" in run.stdout
