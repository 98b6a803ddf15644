"""``python -m rnnx``: the ``rnnx`` command line."""

import sys

from rnnx.cli import main

sys.exit(main())
