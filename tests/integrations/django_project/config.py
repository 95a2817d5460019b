"""The project's settings, built from a conninfo given at run time (no credentials here)."""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict

#: The environment variable that carries the conninfo to ``settings.py`` (the subprocess).
CONNINFO_ENV = "PGFLEET_DJANGO_CONNINFO"
#: application_name of the project's connections, to count them in pg_stat_activity.
APPLICATION_NAME = "pgfleet-django-test"
ENGINE = "pgfleet.integrations.django"


def database(
    conninfo: str,
    *,
    pool: dict[str, Any] | bool | None = None,
    application_name: str = APPLICATION_NAME,
    options: dict[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """One ``DATABASES`` entry on pgfleet's backend for `conninfo` (parsed, never pasted);
    `options` go into ``OPTIONS``, other keywords into the entry."""
    params = conninfo_to_dict(conninfo)
    all_options: dict[str, Any] = {"application_name": application_name, **(options or {})}
    if pool is not None:
        all_options["pool"] = pool
    return {
        "ENGINE": ENGINE,
        "NAME": params["dbname"],
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": str(params.get("port", "")),
        "OPTIONS": all_options,
        **settings,
    }


def project_settings(
    conninfo: str, *, extra_databases: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Every setting of the project; ``default`` pools at most 4 connections."""
    return {
        "DEBUG": False,
        "SECRET_KEY": "pgfleet-tests-not-a-secret",
        "ALLOWED_HOSTS": ["testserver", "localhost"],
        "INSTALLED_APPS": ["integrations.django_project.shop"],
        "MIDDLEWARE": [],
        "ROOT_URLCONF": "integrations.django_project.urls",
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "DATABASES": {
            "default": database(conninfo, pool={"min_size": 1, "max_size": 4, "timeout": 10}),
            **(extra_databases or {}),
        },
    }
