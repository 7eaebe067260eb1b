"""Settings of a Django project (as ``startproject`` lays it out) whose
``@task`` functions run after the response, in the web process.

Django 6: ``pip install django asgi-bgtasks hypercorn``. Django 5.2: also
``pip install django-tasks`` (the backport of ``django.tasks``; it needs no
entry in ``INSTALLED_APPS``).
"""

SECRET_KEY = "django-insecure-example-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [  # startproject's, less sessions and auth (this app has no users)
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",  # a POST needs a token: views.py
]
ROOT_URLCONF = "mysite.urls"
TASKS = {"default": {"BACKEND": "asgi_bgtasks.django.AfterResponseBackend"}}
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"mysite": {"handlers": ["console"], "level": "INFO"}},
}
