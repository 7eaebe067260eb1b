"""add_task is typed with ParamSpec: a type checker checks the arguments."""

from pathlib import Path

from mypy import api

SAMPLE = Path(__file__).parent / "typing" / "add_task_arguments.py"


def test_mypy_flags_exactly_the_calls_whose_arguments_do_not_match() -> None:
    stdout, _, _ = api.run(
        ["--strict", "--no-incremental", "--hide-error-context", str(SAMPLE)]
    )

    flagged = {
        int(line.split(":")[1]) for line in stdout.splitlines() if ": error:" in line
    }
    expected = {
        number
        for number, line in enumerate(SAMPLE.read_text().splitlines(), start=1)
        if line.endswith("# E")
    }
    assert flagged == expected, stdout
