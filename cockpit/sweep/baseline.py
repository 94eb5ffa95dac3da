"""The baseline: reference completions of every prompt from an OpenAI-compatible endpoint (vLLM, llama.cpp,
a hosted API), written into the prompt table's `local_*` columns.

The client makes its own retries (the SDK's are off, so an attempt is one request): 408, 409, 429 and 5xx answers,
refused connections and timeouts are retried with exponential backoff and full jitter, honouring a `Retry-After`
header up to the cap; other 4xx answers and bodies that are not a completion fail at once. Every failure is one
line naming the endpoint URL. The key is passed to the SDK and nowhere else: never logged, never in a repr.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import openai
import pandas as pd

from cockpit.config import Settings
from cockpit.errors import BadInput, OperationFailed
from cockpit.sweep.prompt_table import load_prompt_table, save_prompt_table

log = logging.getLogger("cockpit.baseline")

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx
NO_KEY = "unused"  # local servers want none, the SDK wants a string


class BaselineError(OperationFailed):
    """The endpoint gave no usable completion. Its message is one line naming the URL."""


@dataclass(frozen=True)
class Completion:
    """One completion; token counts are None when the server sends no usage."""

    text: str
    latency_ms: float  # the successful request only: no queueing, rate limiting or earlier attempts
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None


class CompletionClient(Protocol):
    def complete(self, prompt: str, max_tokens: int) -> Completion: ...


class RateLimiter:
    """At most `rate_per_s` acquisitions per second, evenly spaced; thread-safe. None or 0: no limit."""

    def __init__(
        self,
        rate_per_s: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s is not None and rate_per_s < 0:
            raise ValueError(f"rate limit must be positive, got {rate_per_s}")
        self.interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = float("-inf")

    def acquire(self) -> float:
        """Wait for this caller's slot; returns the seconds waited."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self.sleep(wait)
        return wait


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Retry(Exception):
    """An attempt failed in a way worth retrying; `wait_s` is the server's Retry-After, if any."""

    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.wait_s = reason, wait_s


class OpenAICompletionClient:
    """`/v1/completions` at temperature 0, with our own retries, a rate limit and bounded concurrency."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        rate_limit_per_s: float | None = None,
        concurrency: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1 or concurrency < 1:
            raise ValueError(f"max_attempts and concurrency must be at least 1, got {max_attempts}, {concurrency}")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.url = f"{self.base_url}/completions"
        self.timeout_s, self.max_attempts = timeout_s, max_attempts
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.sleep, self.rng = sleep, rng or random.Random()
        self.limiter = RateLimiter(rate_limit_per_s, clock, sleep)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._rng_lock = threading.Lock()
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key or NO_KEY, max_retries=0, timeout=timeout_s
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> OpenAICompletionClient | None:
        """The configured endpoint, or None when no baseline URL is set."""
        url = settings.baseline_url
        if not url:
            return None
        if not settings.baseline_model:
            raise BadInput(f"{url}: no baseline model (set [baseline] model or $COCKPIT_BASELINE_MODEL)")
        section = settings.file.baseline
        limits = {
            "timeout_s": section.timeout_s,
            "max_attempts": section.max_attempts,
            "rate_limit_per_s": section.rate_limit_per_s,
            "concurrency": section.concurrency,
        }
        return cls(url, settings.baseline_model, settings.baseline_api_key(), **{**limits, **kw})

    def __repr__(self) -> str:
        return f"OpenAICompletionClient(url={self.url!r}, model={self.model!r}, max_attempts={self.max_attempts})"

    __str__ = __repr__

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt - 1))] after failed attempt `attempt`."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        with self._rng_lock:
            return self.rng.uniform(0.0, ceiling)

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        """One greedy completion of `prompt`, retried as the module says; BaselineError when there is none."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._attempt(prompt, max_tokens)
            except _Retry as err:
                last = err.reason
                if attempt == self.max_attempts:
                    break
                wait = min(err.wait_s, self.backoff_cap_s) if err.wait_s is not None else self.backoff_s(attempt)
                log.warning(
                    "%s: attempt %d of %d failed (%s); retrying in %.2f s",
                    self.url,
                    attempt,
                    self.max_attempts,
                    last,
                    wait,
                )
                self.sleep(wait)
        raise BaselineError(f"{self.url}: no completion after {self.max_attempts} attempts; last error: {last}")

    def _attempt(self, prompt: str, max_tokens: int) -> Completion:
        with self._slots:
            self.limiter.acquire()
            start = time.perf_counter()
            try:
                raw = self._client.completions.with_raw_response.create(
                    model=self.model, prompt=prompt, max_tokens=max_tokens, temperature=0
                )
                body = raw.text
            except openai.APITimeoutError:
                raise _Retry(f"timed out after {self.timeout_s:g} s") from None
            except openai.APIConnectionError as err:
                raise _Retry(f"cannot connect ({_shorten(str(err.__cause__ or err))})") from None
            except openai.APIStatusError as err:
                reason = f"HTTP {err.status_code}: {_shorten(err.message)}"
                if err.status_code in RETRYABLE_STATUS or err.status_code >= 500:
                    raise _Retry(reason, retry_after_s(err.response.headers)) from None
                raise BaselineError(f"{self.url}: {reason}") from None
            latency_ms = (time.perf_counter() - start) * 1000.0
        return self._parse(body, latency_ms)

    def _parse(self, body: str, latency_ms: float) -> Completion:
        def bad(problem: str) -> BaselineError:
            return BaselineError(f"{self.url}: not an OpenAI completion response: {problem}")

        try:
            data = json.loads(body)
        except ValueError:
            raise bad(f"the body is not JSON ({_shorten(body, 80)!r})") from None
        if not isinstance(data, dict):
            raise bad(f"expected a JSON object, got {_shorten(body, 80)!r}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad("no 'choices'")
        text = choices[0].get("text")
        if not isinstance(text, str):
            raise bad("choices[0] has no 'text'")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}

        def count(key: str) -> int | None:
            value = usage.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        reason = choices[0].get("finish_reason")
        return Completion(
            text,
            latency_ms,
            count("prompt_tokens"),
            count("completion_tokens"),
            reason if isinstance(reason, str) else None,
        )


class RowFailure(NamedTuple):
    prompt_id: int
    variant: str
    message: str


@dataclass(frozen=True)
class RowOutcome:
    """What `on_row` receives after each row is settled and persisted."""

    prompt_id: int
    variant: str
    status: str  # "done" | "failed"
    completion: Completion | None
    error: str | None


class LocalInferenceRunner:
    """Fills the prompt table's completion columns from a client, persisting after every row."""

    def __init__(self, client: CompletionClient, max_tokens: int, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.client, self.max_tokens, self.concurrency = client, max_tokens, concurrency
        self.failures: list[RowFailure] = []  # of the last run

    def run(
        self, frame: pd.DataFrame, out_path: Path, on_row: Callable[[RowOutcome], None] | None = None
    ) -> pd.DataFrame:
        """Complete every row not "done" (also those done in an earlier run's `out_path`); rows keep their order.

        A row whose completion fails is "failed" and listed in `self.failures`; the others go on.
        """
        frame = self._resume(frame.reset_index(drop=True).copy(), out_path)
        self.failures = []
        todo = [i for i, status in enumerate(frame["status"]) if status != "done"]
        column = {name: frame.columns.get_loc(name) for name in ("local_completion", "local_latency_ms", "status")}
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="baseline")
        try:
            futures: dict[Future[Completion], int] = {
                pool.submit(self.client.complete, frame["prompt"].iat[i], self.max_tokens): i for i in todo
            }
            for future in as_completed(futures):
                i = futures[future]
                prompt_id, variant = int(frame["prompt_id"].iat[i]), str(frame["variant"].iat[i])
                try:
                    completion, error = future.result(), None
                except BaselineError as err:
                    completion, error = None, str(err)
                    self.failures.append(RowFailure(prompt_id, variant, error))
                    log.warning("baseline: prompt %d (%s) failed: %s", prompt_id, variant, error)
                frame.iat[i, column["local_completion"]] = completion.text if completion else None
                frame.iat[i, column["local_latency_ms"]] = completion.latency_ms if completion else None
                frame.iat[i, column["status"]] = "done" if completion else "failed"
                save_prompt_table(frame, out_path)
                if on_row is not None:
                    on_row(RowOutcome(prompt_id, variant, "done" if completion else "failed", completion, error))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        save_prompt_table(frame, out_path)
        return frame

    def _resume(self, frame: pd.DataFrame, out_path: Path) -> pd.DataFrame:
        """Take the rows an earlier run finished for the same prompt from `out_path`, if it exists."""
        if not out_path.exists():
            return frame
        earlier = load_prompt_table(out_path)
        done = {
            (int(row.prompt_id), str(row.variant), str(row.prompt)): row
            for row in earlier.itertuples(index=False)
            if row.status == "done"
        }
        for i, row in enumerate(frame.itertuples(index=False)):
            found = done.get((int(row.prompt_id), str(row.variant), str(row.prompt)))
            if found is not None and row.status != "done":
                for name in ("local_completion", "local_latency_ms", "status"):
                    frame.iat[i, frame.columns.get_loc(name)] = getattr(found, name)
        return frame


__all__ = [
    "BaselineError",
    "Completion",
    "CompletionClient",
    "LocalInferenceRunner",
    "OpenAICompletionClient",
    "RateLimiter",
    "RowFailure",
    "RowOutcome",
    "retry_after_s",
]
