"""The Django example's project with a 1 s shutdown_timeout (test_shutdown.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

from django.core.asgi import get_asgi_application
from django.core.management import call_command

from asgi_bgtasks import BackgroundTasksMiddleware

app = BackgroundTasksMiddleware(get_asgi_application(), shutdown_timeout=1)
call_command("migrate", run_syncdb=True, verbosity=0)
