from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("register", views.register),
    path("members/<int:pk>", views.member),
    path("notify", views.notify),
    path("broken", views.broken),
    path("report", views.report),
    path("sign-up", views.sign_up),
    path("tasks/<str:result_id>", views.task_result),
]
