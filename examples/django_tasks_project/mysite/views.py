"""A view that enqueues the task, and one that reads its result."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .tasks import send_welcome_email


@csrf_exempt  # an API called without Django's CSRF token (curl, another service)
@require_POST
def register(request: HttpRequest) -> JsonResponse:
    result = send_welcome_email.enqueue(request.GET["email"])  # runs after this
    return JsonResponse({"status": "welcome", "task": result.id}, status=201)


def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    result = send_welcome_email.get_result(task_id)  # READY, RUNNING, SUCCESSFUL
    return JsonResponse({"status": result.status, "value": result.return_value})
