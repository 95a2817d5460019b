"""URLs of the test project."""

from __future__ import annotations

from django.urls import path

from integrations.django_project.shop import views

urlpatterns = [
    path("work/", views.work),
    path("items/<str:name>/", views.item),
]
