"""How the command-line entry points turn errors into one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

from runtime.schema import InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def run_main(prog: str, debug: bool, action: Callable[[], int]) -> int:
    """Run `action`; bad input prints one line and exits 2 (a traceback only with --debug)."""
    try:
        return action()
    except InputError as err:
        if debug:
            raise
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
