"""A real OpenAI-compatible HTTP server on loopback that generates greedily with the built-in small model.

It can be told to misbehave: a script of answers for the first completion requests (an HTTP status, `"garbage"`
for a 200 whose body is not JSON, `"no-choices"` for JSON without `choices`), and a marker that makes every prompt
containing it fail with 500 forever. It counts the completion requests it receives and the most it had in flight
at once, and can hold every answer back by `delay_s` (to make requests overlap, or time out).
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL_NAME = "tiny-llama"
Answer = int | str  # a status code, "garbage" or "no-choices"


class TinyModel:
    """The built-in model loaded once; greedy generation serialized behind a lock."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        from runtime.checkpoint import load_config, load_stage

        config = load_config(model_dir)
        self.stage, _ = load_stage(model_dir, config, range(config.num_hidden_layers), first=True, last=True)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.eos = {self.tokenizer.eos_token_id}
        self.pad = self.tokenizer.pad_token_id
        self._lock = threading.Lock()

    def generate(self, prompt: str, max_tokens: int) -> tuple[str, int, int, str]:
        """(text, prompt tokens, completion tokens, finish reason) of a greedy decode."""
        import torch

        from runtime.generate import DecodeSettings, Generator

        ids = self.tokenizer(prompt)["input_ids"]
        with self._lock:
            settings = DecodeSettings(torch.device("cpu"), torch.float32, self.eos, self.pad, max_tokens)
            generator = Generator.alone(self.stage, settings)
            (result,) = generator.run([ids])
        text = self.tokenizer.decode(result.tokens, skip_special_tokens=True)
        return text, len(ids), len(result.tokens), "stop" if result.finish_reason == "eos" else "length"


class OpenAIServer:
    """`POST /v1/completions`, `GET /v1/models` and `GET /health` on 127.0.0.1, in a background thread."""

    def __init__(
        self, model: TinyModel, script: Sequence[Answer] = (), fail_marker: str | None = None, delay_s: float = 0.0
    ) -> None:
        self.model, self.fail_marker, self.delay_s = model, fail_marker, delay_s
        self.script: list[Answer] = list(script)
        self.requests = 0  # POST /v1/completions received
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = False  # server_close waits for answers still being made
        serve = functools.partial(self._httpd.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="openai-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def next_answer(self, prompt: str) -> Answer | None:
        """Count the request; the scripted answer for it, or None to generate."""
        with self._lock:
            self.requests += 1
            if self.fail_marker is not None and self.fail_marker in prompt:
                return 500
            return self.script.pop(0) if self.script else None

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Track one request in flight, held back by `delay_s`."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                self.end_headers()
                self.wfile.write(body)

        def _json(self, status: int, data: object, **headers: str) -> None:
            self._send(status, json.dumps(data).encode(), **headers)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "test"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self) -> None:
            if self.path != "/v1/completions":
                self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            length = int(self.headers.get("Content-Length", 0))
            try:
                request = json.loads(self.rfile.read(length))
                prompt, max_tokens = request["prompt"], int(request.get("max_tokens", 16))
            except (ValueError, KeyError, TypeError) as err:
                self._json(400, {"error": {"message": f"bad request: {err}", "type": "invalid_request_error"}})
                return
            with server.busy():  # left before the answer goes out: the client may send its next one at once
                status, body, content_type, headers = self._answer(request, prompt, max_tokens)
            self._send(status, body, content_type, **headers)

        def _answer(self, request: dict, prompt: str, max_tokens: int) -> tuple[int, bytes, str, dict[str, str]]:
            answer = server.next_answer(prompt)
            if answer == "garbage":
                return 200, b"<html><body>502 Bad Gateway</body></html>", "text/html", {}
            if answer == "no-choices":
                data: dict = {"object": "text_completion", "model": MODEL_NAME}
                return 200, json.dumps(data).encode(), "application/json", {}
            if isinstance(answer, int):
                headers = {"Retry_After": "0"} if answer == 429 else {}
                data = {"error": {"message": f"scripted {answer}", "type": "scripted"}}
                return answer, json.dumps(data).encode(), "application/json", headers
            text, prompt_tokens, completion_tokens, reason = server.model.generate(prompt, max_tokens)
            data = {
                "id": f"cmpl-{server.requests}",
                "object": "text_completion",
                "model": request.get("model", MODEL_NAME),
                "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
            return 200, json.dumps(data).encode(), "application/json", {}

    return Handler


@contextlib.contextmanager
def serve(
    model: TinyModel, script: Sequence[Answer] = (), fail_marker: str | None = None, delay_s: float = 0.0
) -> Iterator[OpenAIServer]:
    """A started server, stopped (shutdown, thread joined) on exit."""
    server = OpenAIServer(model, script, fail_marker, delay_s).start()
    try:
        yield server
    finally:
        server.stop()


def refused_url() -> str:
    """A loopback base URL nothing listens on: a port bound, noted and closed again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
