"""`python -m auditbus`: the `auditbus` command."""

import sys

from .cli import main

sys.exit(main())
