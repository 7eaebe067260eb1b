"""The example's tasks for Django's tasks framework (``@task``).

``settings.TASKS`` decides where they run: after the response, in the web
process (``AfterResponseBackend``), or in django-tasks-db's worker process.
"""

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task

from examples.tasks import send_welcome_email


@task
def welcome(address: str) -> str:
    """Send the welcome e-mail; the result's return value is its subject."""
    send_welcome_email(address)
    return "Welcome!"
