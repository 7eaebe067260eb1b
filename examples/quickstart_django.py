"""Django in one file: save as main.py, run ``hypercorn main:app``.

In a project, the settings live in settings.py and the last line in asgi.py.
"""

import logging
import time

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("quickstart")
settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    SECRET_KEY="quick-start-only",
)


def send_welcome_email(address: str) -> None:
    time.sleep(1)  # stands in for a slow mail server (a plain def: in a thread)
    logger.info("welcome e-mail sent to %s", address)


def register(request: HttpRequest) -> JsonResponse:
    add_task(send_welcome_email, request.GET["email"])  # after the response
    return JsonResponse({"status": "welcome"}, status=201)


urlpatterns = [path("register", register)]
# Serve this: the middleware wraps Django's whole ASGI application.
app = BackgroundTasksMiddleware(get_asgi_application())
