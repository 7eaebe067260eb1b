"""The project's URLs."""

from django.urls import path

from . import views

urlpatterns = [
    path("register", views.register),
    path("tasks/<str:task_id>", views.task_status),
]
