"""`cockpit --web`: the same app in a browser through textual-serve, one app process per browser tab."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path

from aiohttp import web
from textual_serve.server import Server

from cockpit.errors import OperationFailed


def app_command(config: Path | None, read_only: bool, debug: bool, demo: bool = False) -> str:
    """The shell command textual-serve runs for each browser session: this app, with the same options."""
    argv = [sys.executable, "-m", "cockpit.tui.main"]
    if config is not None:
        argv += ["--config", str(config)]
    if demo:
        argv.append("--demo")
    if read_only:
        argv.append("--read-only")
    if debug:
        argv.append("--debug")
    return shlex.join(argv)


class CockpitServer(Server):
    """textual-serve's server, with three changes: its page's links name the address the browser used (stock
    textual-serve names the listening address, which a laptop cannot reach when that is 0.0.0.0); its websocket
    is refused to pages from other sites (which could otherwise drive the app from any tab of the same browser);
    and Ctrl-C ends the open sessions at once (stock, the server waits up to a minute for them)."""

    def __init__(self, command: str, host: str, port: int) -> None:
        super().__init__(command, host=host, port=port, title="cockpit")
        self.sessions: set[asyncio.Task[object]] = set()

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        """The page; no await comes between setting the URL and rendering it."""
        self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """A session, only for this server's own page (or a client that sends no Origin, like a script)."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text=f"cockpit: websocket from another origin ({origin}) refused")
        session = asyncio.current_task()
        assert session is not None  # aiohttp runs every request in a task
        self.sessions.add(session)
        try:
            return await super().handle_websocket(request)
        finally:
            self.sessions.discard(session)

    async def on_shutdown(self, app: web.Application) -> None:
        """Cancel every session: textual-serve then tells its app to quit and closes its websocket."""
        for session in self.sessions:
            session.cancel()


def serve(command: str, host: str, port: int) -> None:
    """Serve `command` on host:port until Ctrl-C; a port that cannot be opened is bad input."""
    try:
        CockpitServer(command, host, port).serve()
    except OSError as err:
        raise OperationFailed(f"cannot serve on {host}:{port}: {err.strerror or err}") from None
