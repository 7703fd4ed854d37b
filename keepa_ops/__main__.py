"""``python -m keepa_ops``: the ``keepa-ops`` command."""
import sys

from .cli import main

sys.exit(main())
