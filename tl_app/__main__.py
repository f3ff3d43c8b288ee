"""``python -m tl_app``: the command line."""

import sys

from .cli import main

sys.exit(main())
