"""``python -m autoshrink.scripts`` runs the CLI."""

import sys

from autoshrink.scripts.cli import main

sys.exit(main())
