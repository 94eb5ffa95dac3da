"""`python -m runtime --config exp_config.json`."""

import sys

from runtime.main import main

sys.exit(main())
