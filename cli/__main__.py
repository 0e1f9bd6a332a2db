"""`python -m pocketsam` is the `pocketsam` command."""

import sys

from .cli import main

sys.exit(main())
