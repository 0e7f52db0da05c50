"""``python -m marketd`` is the ``marketd`` command."""

import sys

from marketd.cli import main

sys.exit(main())
