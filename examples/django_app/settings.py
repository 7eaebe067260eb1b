"""Settings for the Django example: one app, SQLite, no sessions or auth."""

import os
from pathlib import Path

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS = ["examples.django_app.members"]
# Django's tasks framework (members/tasks.py): the tasks run after the response,
# in this process, with no worker to run.
TASKS = {"default": {"BACKEND": "asgi_bgtasks.django.AfterResponseBackend"}}
if os.environ.get("EXAMPLES_DURABLE_TASKS"):  # the same views, a durable worker:
    # django-tasks-db keeps the tasks in the database; its worker runs them:
    # `django-admin db_worker` (tests/test_example_django.py starts one).
    INSTALLED_APPS += ["django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
MIDDLEWARE: list[str] = []  # a JSON API without sessions, so no CSRF either
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DJANGO_DB_PATH", str(Path(__file__).with_name("db.sqlite3"))
        ),
        "CONN_MAX_AGE": 0,  # under ASGI, as Django advises: no persistent connections
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "formatters": {},
    "loggers": {
        "asgi_bgtasks": {"handlers": ["console"], "level": "INFO"},
        "examples": {"handlers": ["console"], "level": "INFO"},
        "django": {"handlers": ["console"], "level": "WARNING"},
    },
}
