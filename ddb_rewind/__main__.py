"""``python -m ddb_rewind`` runs the command line."""

import sys

from ddb_rewind.cli import main

sys.exit(main())
