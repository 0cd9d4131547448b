"""`python -m qpass ...`: the same as the `qpass` command."""
import sys

from .cli import main

sys.exit(main())
