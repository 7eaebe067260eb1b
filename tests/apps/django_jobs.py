"""Django tasks (``@task``) and views for tests/test_django_tasks.py.

Imported once Django is set up (``@task`` asks the configured backend to
validate each task). Tasks report to ``ran``, which a test may replace with
its own event list, and wait at ``gate`` where a test needs them held.
"""

import asyncio
import contextlib
import threading
from functools import partial
from typing import Any

from django.db import connection, connections, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path

from asgi_bgtasks import add_task, task_options

try:
    from django.tasks import TaskContext, task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import TaskContext, task

ran: list[Any] = []
arrived = asyncio.Event()  # `held` has started; a test sets fresh events
gate = asyncio.Event()  # lets `held` finish
unwound = asyncio.Event()  # lets `stubborn` finish its unwinding
released = threading.Event()  # lets `slow_in_thread` return
attempts: dict[str, int] = {}


@task
def remember(text: str) -> str:
    ran.append(text)
    return text.upper()


@task
async def remember_async(text: str) -> list[str]:
    ran.append(text)
    return [text, "async"]


@task
def fails(text: str) -> None:
    ran.append(text)
    raise ValueError("the task failed")


@task
async def held(text: str) -> None:
    ran.append(f"{text} started")
    arrived.set()
    await gate.wait()
    ran.append(f"{text} done")


@task
async def fails_async(text: str) -> None:
    ran.append(text)
    raise ValueError("the async task failed")


@task
async def stubborn(text: str) -> str:
    """Cancelled, it goes on until ``unwound`` is set, then returns, however
    often it is cancelled meanwhile."""
    arrived.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        ran.append(f"{text} cancelled")
    while not unwound.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await unwound.wait()
    return text


@task
@task_options(timeout=0.01)
async def too_slow(text: str) -> None:
    ran.append(text)
    await asyncio.Event().wait()


@task
@task_options(timeout=0.01)
def slow_in_thread(text: str) -> str:
    released.wait(30)
    ran.append(text)
    return text


@task
@task_options(retries=1, retry_delay=0)
def flaky(text: str) -> str:
    attempts[text] = attempts.get(text, 0) + 1
    ran.append(f"{text} attempt {attempts[text]}")
    if attempts[text] == 1:
        raise ConnectionError("first attempt fails")
    return text


@task
@task_options(retries=1, retry_delay=60)
def fails_then_waits_for_its_retry(text: str) -> None:
    ran.append(text)
    raise ConnectionError("smtp down")


@task(takes_context=True)
def knows_its_attempt(context: TaskContext, text: str) -> int:
    ran.append(text)
    return int(context.attempt)


@task
async def cancels_itself(text: str) -> None:
    ran.append(text)
    raise asyncio.CancelledError  # its own failure: nobody cancelled it


@task
async def cancels_its_own_task(text: str) -> None:
    """Cancels the Task it runs in, as a timeout would, but nobody else did."""
    ran.append(text)
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)


@task
async def cancels_its_own_task_and_returns(text: str) -> str:
    """Leaves a cancel request to its own Task, then returns: its Task ends
    cancelled all the same (asyncio's rule)."""
    ran.append(text)
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    return text


@task
@task_options(timeout=0.01)
async def cleans_up_after_its_timeout(text: str) -> str:
    """Catches its timeout's cancellation to clean up, then returns."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        ran.append(f"{text} cleaned up")
    return text


@task
def returns_a_set(text: str) -> set[str]:
    ran.append(text)
    return {text}


@task
def uses_the_database(text: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    ran.append(connections["default"])  # this thread's wrapper


@task
async def enqueues_another(text: str) -> None:
    ran.append(text)
    await remember.aenqueue(f"{text}, then")


def enqueue_on_commit(request: HttpRequest) -> JsonResponse:
    """Enqueue once the view's transaction commits (ATOMIC_REQUESTS)."""
    transaction.on_commit(partial(remember.enqueue, "committed"))
    ran.append("view returns")
    return JsonResponse({}, status=201)


def roll_back(request: HttpRequest) -> JsonResponse:
    """Enqueue on commit, but roll the view's transaction back."""
    transaction.on_commit(partial(remember.enqueue, "rolled back"))
    transaction.set_rollback(True)
    return JsonResponse({})


def enqueue_and_add_task(request: HttpRequest) -> JsonResponse:
    """A sync view: Django tasks and add_task share one order."""
    remember.enqueue("first")
    add_task(ran.append, "second")
    result = remember.enqueue("third")
    return JsonResponse({"task": result.id, "status": result.status})


async def enqueue_async(request: HttpRequest) -> JsonResponse:
    """An async view: aenqueue."""
    result = await remember_async.aenqueue("from an async view")
    return JsonResponse({"task": result.id, "status": result.status})


def enqueue_then_fail(request: HttpRequest) -> JsonResponse:
    result = remember.enqueue("never")
    ran.append(result.id)
    raise RuntimeError("the view failed")


urlpatterns = [
    path("on-commit", enqueue_on_commit),
    path("roll-back", roll_back),
    path("order", enqueue_and_add_task),
    path("async", enqueue_async),
    path("fail", enqueue_then_fail),
]
