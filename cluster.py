#!/usr/bin/env python3
"""cluster.py: the cockpit's headless commands (`./cluster.py --help`); the same as the `cluster` command.

Any Python 3.11+ may run it: where the project's `.venv` exists beside this file and is not the Python running,
the script runs itself again with the `.venv`'s Python (once: REEXEC_MARK guards against a loop); without a
`.venv`, a package the cockpit needs but this Python lacks is one line saying what to run, not a traceback.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
REEXEC_MARK = "COCKPIT_CLUSTER_PY_REEXEC"

if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV.resolve() and REEXEC_MARK not in os.environ:
    os.environ[REEXEC_MARK] = "1"
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), str(HERE / "cluster.py"), *sys.argv[1:]])

sys.path.insert(0, str(HERE))  # a plain checkout works without installing

if __name__ == "__main__":
    try:
        from cockpit.cli import main

        sys.exit(main())
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] in ("cockpit", "runtime"):
            raise
        sys.exit(
            f"cluster.py: {sys.executable} lacks {err.name}, which the cockpit needs: run {HERE}/scripts/setup demo "
            f"(it makes {VENV} with the project's packages), then this command again"
        )
