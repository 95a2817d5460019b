"""``DJANGO_SETTINGS_MODULE`` of the project, for ``python -m django`` in a subprocess: the
database comes from the environment (`config.CONNINFO_ENV`)."""

from __future__ import annotations

import os

from integrations.django_project.config import CONNINFO_ENV, project_settings

globals().update(project_settings(os.environ[CONNINFO_ENV]))
