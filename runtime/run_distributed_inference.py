#!/usr/bin/env python3
"""The DeepSpeed entry script: `deepspeed runtime/run_distributed_inference.py --config exp_config.json`.

Launchers run a file, not a module; this file makes the project importable and hands over to runtime.main,
which accepts the `--local_rank` argument the deepspeed launcher adds.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.main import main  # the path above makes this work from a plain checkout

if __name__ == "__main__":
    sys.exit(main())
