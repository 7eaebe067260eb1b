"""Background tasks that run after the response has been sent, for any ASGI app."""

from ._middleware import BackgroundTasksMiddleware
from ._options import task_options
from ._stats import Stats
from ._tasks import (
    BackgroundTasks,
    DroppedTask,
    TaskInfo,
    add_task,
    background_tasks,
)
from ._version import __version__

__all__ = [
    "BackgroundTasks",
    "BackgroundTasksMiddleware",
    "DroppedTask",
    "Stats",
    "TaskInfo",
    "__version__",
    "add_task",
    "background_tasks",
    "task_options",
]
