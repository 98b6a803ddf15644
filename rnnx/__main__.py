"""``python -m rnnx``: the ``rnnx`` command line."""

import sys

from rnnx.apps.cli import main

sys.exit(main())
