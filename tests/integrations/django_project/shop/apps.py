"""App configuration of ``shop``."""

from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    """The ``shop`` app (its label stays ``shop`` whatever the import path)."""

    name = "integrations.django_project.shop"
    label = "shop"
