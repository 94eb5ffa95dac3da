"""`python -m cockpit.cli`: the `cluster` command (how the cockpit starts a sweep in a process of its own)."""

import sys

from cockpit.cli import main

sys.exit(main())
