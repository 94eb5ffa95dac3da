"""`cockpit`: start the full-screen app, or serve it to a browser (`--web`). Configuration errors are reported before
either starts."""

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
    web = parser.add_argument_group("web", "serve the same app to a browser (one app process per browser tab)")
    web.add_argument("--web", action="store_true", help="serve the app over http instead of opening it here")
    web.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 opens it to the LAN)"
    )
    web.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def start() -> int:
        settings = load_settings(args.config)
        if args.web:
            from cockpit.tui.web import app_command, serve

            serve(app_command(settings.source, args.read_only, args.debug), args.host, args.port)
            return EXIT_OK
        from cockpit.tui.app import CockpitApp  # textual loads only once the configuration is known good
        from cockpit.tui.sources import LiveSource

        CockpitApp(settings, LiveSource(settings), read_only=args.read_only).run()
        return EXIT_OK

    return run_main("cockpit", args.debug, start)


if __name__ == "__main__":
    sys.exit(main())
