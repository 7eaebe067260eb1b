"""The ``asgi.py`` that ``startproject`` makes, with the middleware around
Django's application. Serve it: ``hypercorn mysite.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

from asgi_bgtasks import BackgroundTasksMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = BackgroundTasksMiddleware(get_asgi_application())
