"""Settings for the Django example: one app, SQLite, no sessions or auth."""

import os
from pathlib import Path

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS = ["examples.django_app.members"]
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
