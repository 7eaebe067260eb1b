"""The API reference is generated from docstrings: every option and every
field has its line there, so a new one cannot go undocumented."""

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

from asgi_bgtasks import (
    BackgroundTasksMiddleware,
    DroppedTask,
    Stats,
    TaskInfo,
    task_options,
)


def documented(obj: Any, section: str) -> list[str]:
    """The names a Google-style ``section`` of ``obj``'s docstring explains."""
    doc = inspect.getdoc(obj) or ""
    match = re.search(rf"^{section}:\n(.*?)(?:\n\S|\Z)", doc, re.M | re.S)
    assert match is not None, f"{obj.__qualname__} has no {section} section"
    return re.findall(r"^    (\w+):", match.group(1), re.M)


@pytest.mark.parametrize(
    "obj",
    [BackgroundTasksMiddleware, task_options],
    ids=["BackgroundTasksMiddleware", "task_options"],
)
def test_every_argument_is_documented_in_order(obj: Callable[..., Any]) -> None:
    parameters = list(inspect.signature(obj).parameters)

    assert documented(obj, "Args") == parameters


@pytest.mark.parametrize(
    "cls", [Stats, TaskInfo, DroppedTask], ids=lambda c: c.__name__
)
def test_every_field_is_documented_in_order(cls: type) -> None:
    fields = [field.name for field in dataclasses.fields(cls)]

    assert documented(cls, "Attributes") == fields
