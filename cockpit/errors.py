"""The cockpit's errors, each carrying the exit code the command-line entry points give it, and how those entry
points turn an error into one line and that code.

    CockpitError          something the cockpit explains in one line; exit 1 unless a subclass says otherwise
      BadInput            a file, flag or setting the user gave is wrong (exit 2)
      OperationFailed     something the cockpit tried did not work: a scheduler, a host, an endpoint (exit 1)
      Interrupted         the user stopped it: Ctrl-C, SIGTERM, a cancelled job (exit 130)

A file that breaks the contract both sides share (`runtime.schema.InputError`: a bad exp_config.json, a torn
manifest) is bad input too; `BAD_INPUT` catches it with the cockpit's own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from runtime.schema import InputError as ContractError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class CockpitError(Exception):
    """A failure the cockpit explains in one line (the message names the file, host or job)."""

    exit_code = EXIT_FAILED


class BadInput(CockpitError):
    """A file, flag or setting the user gave is wrong."""

    exit_code = EXIT_BAD_INPUT


class OperationFailed(CockpitError):
    """Something the cockpit tried did not work: a scheduler, a host, an endpoint."""

    exit_code = EXIT_FAILED


class Interrupted(CockpitError):
    """The user stopped it (Ctrl-C, SIGTERM, a cancelled job); what was running is left consistent."""

    exit_code = EXIT_INTERRUPTED


BAD_INPUT = (BadInput, ContractError)  # everything that means "what you gave me is wrong"


def exit_code(err: BaseException) -> int:
    """The exit code an error means to the command line."""
    if isinstance(err, CockpitError):
        return err.exit_code
    if isinstance(err, ContractError):
        return EXIT_BAD_INPUT
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def run_main(prog: str, debug: bool, action: Callable[[], int]) -> int:
    """Run `action`; a cockpit or contract error prints one line and exits with its code (a traceback only with
    --debug), Ctrl-C exits 130."""
    try:
        return action()
    except (CockpitError, ContractError) as err:
        if debug:
            raise
        print(f"{prog}: {err}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
