"""Models of the ``shop`` app."""

from __future__ import annotations

from django.db import models


class Item(models.Model):
    """Something in stock."""

    name = models.CharField(max_length=100, unique=True)
    quantity = models.IntegerField(default=0)

    class Meta:
        app_label = "shop"
