"""`python -m dnl_ad` is the same as the `dnl-ad` command."""

import sys

from .cli import main

sys.exit(main())
