"""``python -m lgf.cli``: the same as the ``lgf`` script."""

import sys

from lgf.cli import main

sys.exit(main())
