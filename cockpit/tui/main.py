"""`cockpit`: start the full-screen app, or serve it to a browser (`--web`); `--demo` on a simulated cluster instead
of the configured one. Configuration errors are reported before either starts."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cockpit.config import CONFIG_NAME, load_settings
from cockpit.errors import EXIT_OK, run_main

if TYPE_CHECKING:
    from cockpit.tui.app import CockpitApp
    from cockpit.tui.sources import ClusterSource


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cockpit", description="The GPU cluster cockpit (full-screen).")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--config", metavar="PATH", help=f"configuration file (default: ./{CONFIG_NAME}, else the embedded default)"
    )
    cluster.add_argument(
        "--demo",
        action="store_true",
        help="a simulated cluster (8 nodes, a sweep under way): reads no configuration, touches no machine, and only "
        "pretends to act",
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


def build_app(args: argparse.Namespace) -> CockpitApp:
    """The app `args` ask for: on the simulated cluster (`--demo`), else on the configured one."""
    source: ClusterSource
    if args.demo:
        from cockpit.tui.demo import DemoSource, demo_settings

        settings, source = demo_settings(), DemoSource()
    else:
        settings = load_settings(args.config)
        from cockpit.tui.sources import LiveSource

        source = LiveSource(settings)
    from cockpit.tui.app import CockpitApp  # textual loads only once the configuration is known good

    return CockpitApp(settings, source, read_only=args.read_only)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def start() -> int:
        if args.web:
            from cockpit.tui.web import app_command, serve

            config = None if args.demo else load_settings(args.config).source
            serve(app_command(config, args.read_only, args.debug, args.demo), args.host, args.port)
            return EXIT_OK
        build_app(args).run()
        return EXIT_OK

    return run_main("cockpit", args.debug, start)


if __name__ == "__main__":
    sys.exit(main())
