"""``python -m altdiffusion.cli``: the same as the ``altdiffusion`` command."""

import sys

from altdiffusion.cli import main

sys.exit(main())
