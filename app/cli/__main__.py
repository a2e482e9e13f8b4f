"""`python -m app.cli ...`, as the installed `memaudit` script."""

import sys

from app.cli import main

sys.exit(main())
