"""``python -m bench.freshness``: see the package's docstring."""

import sys

from bench.freshness.cli import main

sys.exit(main())
