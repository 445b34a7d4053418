"""``python -m pointseg``: the command line (also what ``torchrun ... -m pointseg train`` starts)."""

import sys

from pointseg.cli import main

sys.exit(main())
