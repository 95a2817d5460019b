"""``python -m pgfleet``: the ``pgfleet`` command line."""

from __future__ import annotations

import sys

from pgfleet.cli import main

if __name__ == "__main__":
    sys.exit(main())
