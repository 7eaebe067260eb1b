"""A Django ASGI project with background tasks.

Run: ``hypercorn examples.django_app:app`` (SQLite file from
``DJANGO_DB_PATH``, default ``examples/django_app/db.sqlite3``; its tables are
created on start).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

from django.core.asgi import get_asgi_application
from django.core.management import call_command

from asgi_bgtasks import BackgroundTasksMiddleware

# Django's handler has no lifespan support: the middleware answers lifespan
# itself, so tasks run detached and are still drained on shutdown.
app = BackgroundTasksMiddleware(get_asgi_application())

call_command("migrate", run_syncdb=True, verbosity=0)  # the example's tables
