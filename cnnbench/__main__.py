"""``python -m cnnbench`` is the ``cnnbench`` script."""

import sys

from .cli import main

sys.exit(main())
