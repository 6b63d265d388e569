"""``python -m tfload_export``: the same as the ``tfload-export`` command."""
import sys

from .cli import main

sys.exit(main())
