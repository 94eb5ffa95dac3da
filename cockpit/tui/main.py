"""`cockpit`: start the full-screen app. Configuration errors are reported before the screen opens."""

from __future__ import annotations

import argparse
import sys

from cockpit.config import CONFIG_NAME, load_settings
from cockpit.errors import EXIT_OK, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cockpit", description="The GPU cluster cockpit (full-screen).")
    parser.add_argument(
        "--config", metavar="PATH", help=f"configuration file (default: ./{CONFIG_NAME}, else the embedded default)"
    )
    parser.add_argument("--read-only", action="store_true", help="look, never act: disables every action")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def start() -> int:
        settings = load_settings(args.config)
        from cockpit.tui.app import CockpitApp  # textual loads only once the configuration is known good
        from cockpit.tui.sources import LiveSource

        CockpitApp(settings, LiveSource(settings), read_only=args.read_only).run()
        return EXIT_OK

    return run_main("cockpit", args.debug, start)


if __name__ == "__main__":
    sys.exit(main())
