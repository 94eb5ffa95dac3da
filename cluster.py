#!/usr/bin/env python3
"""cluster.py: the cockpit's headless commands (`./cluster.py --help`); the same as the `cluster` command."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cockpit.cli import main  # the path above makes a plain checkout work without installing

if __name__ == "__main__":
    sys.exit(main())
