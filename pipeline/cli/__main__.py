"""``python -m pipeline.cli``: the ``avel`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
