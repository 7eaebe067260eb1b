"""Sync and async views that schedule tasks, one that fails, and a stream."""

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from asgi_bgtasks import add_task
from asgi_bgtasks.django import db_task
from examples.django_app.members.models import Member
from examples.django_app.members.tasks import welcome
from examples.tasks import (
    log_report_download,
    record,
    report_chunks,
    send_welcome_email,
    write_notification,
)


@db_task
def mark_welcomed(member_id: int) -> None:
    """A sync task using the ORM (runs in a worker thread)."""
    Member.objects.filter(pk=member_id).update(welcomed=True)
    record("member welcomed", member=member_id)


@db_task
async def count_members() -> None:
    """An async task using Django's async ORM."""
    record("members counted", count=await Member.objects.acount())


def register(request: HttpRequest) -> JsonResponse:
    """A sync view: the e-mail goes out first, then the row is updated."""
    member = Member.objects.create(email=request.GET["email"])
    add_task(send_welcome_email, member.email)
    add_task(mark_welcomed, member.pk)
    return JsonResponse({"member": member.pk}, status=201)


def member(request: HttpRequest, pk: int) -> JsonResponse:
    found = Member.objects.get(pk=pk)
    return JsonResponse({"email": found.email, "welcomed": found.welcomed})


async def notify(request: HttpRequest) -> JsonResponse:
    """An async view."""
    add_task(write_notification, request.GET.get("text", "hello"))
    add_task(count_members)
    return JsonResponse({"status": "queued"}, status=202)


def broken(request: HttpRequest) -> JsonResponse:
    """Fails after scheduling: Django answers 500 and the task is dropped."""
    add_task(write_notification, "the broken view succeeded")
    raise RuntimeError("the view failed")


async def report(request: HttpRequest) -> StreamingHttpResponse:
    add_task(log_report_download, "csv")
    return StreamingHttpResponse(report_chunks(), content_type="text/csv")


def sign_up(request: HttpRequest) -> JsonResponse:
    """Django's tasks framework: the welcome e-mail goes out after the response."""
    member = Member.objects.create(email=request.GET["email"])
    result = welcome.enqueue(member.email)
    return JsonResponse({"member": member.pk, "task": result.id}, status=202)


def task_result(request: HttpRequest, result_id: str) -> JsonResponse:
    """Where a task enqueued by ``sign_up`` is, from the backend's results."""
    result = welcome.get_result(result_id)
    return JsonResponse(
        {
            "status": result.status,
            "errors": [error.exception_class_path for error in result.errors],
            "worker_ids": result.worker_ids,
            "return_value": result.return_value
            if result.status == "SUCCESSFUL"
            else None,
        }
    )
