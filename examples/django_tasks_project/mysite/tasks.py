"""The project's tasks, written as Django's tasks framework documents them."""

import logging
import time

try:
    from django.tasks import task  # Django 6
except ImportError:  # Django 5.2, with the django-tasks backport
    from django_tasks import task

logger = logging.getLogger(__name__)


@task
def send_welcome_email(address: str) -> str:
    time.sleep(1)  # stands in for a slow mail server (a plain def: in a thread)
    logger.info("welcome e-mail sent to %s", address)
    return "Welcome!"
