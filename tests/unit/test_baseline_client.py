"""The baseline client's own machinery, without a server: backoff, Retry-After, rate limiting, settings, secrecy."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from pathlib import Path

import pytest

from cockpit.config import BaselineSection, CockpitFile, Settings
from cockpit.errors import BadInput
from cockpit.sweep.baseline import BaselineError, OpenAICompletionClient, RateLimiter, retry_after_s
from tests.integration.openai_server import refused_url


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Ceiling(random.Random):
    """Always the top of the range: shows the backoff's upper bound."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_is_full_jitter_below_an_exponential_capped_ceiling() -> None:
    top = OpenAICompletionClient("http://127.0.0.1:9/v1", "m", backoff_base_s=0.5, backoff_cap_s=5.0, rng=Ceiling())
    assert [top.backoff_s(a) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = OpenAICompletionClient("http://127.0.0.1:9/v1", "m", backoff_base_s=0.5, backoff_cap_s=5.0)
    jittered.rng = random.Random(7)
    for attempt in range(1, 7):
        delays = [jittered.backoff_s(attempt) for _ in range(200)]
        ceiling = min(5.0, 0.5 * 2 ** (attempt - 1))
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling  # spread over the whole range


def test_retries_sleep_between_attempts_and_never_after_the_last() -> None:
    clock = FakeClock()
    url = refused_url()
    client = OpenAICompletionClient(
        url, "m", max_attempts=4, backoff_base_s=1.0, backoff_cap_s=3.0, sleep=clock.sleep, rng=Ceiling()
    )
    start = time.monotonic()
    with pytest.raises(BaselineError, match=r"no completion after 4 attempts; last error: cannot connect") as caught:
        client.complete("hello", 4)
    assert clock.sleeps == [1.0, 2.0, 3.0] and time.monotonic() - start < 5  # no real sleeping
    assert str(caught.value).startswith(f"{url}/completions: ")


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Retry-After": "0"}, 0.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_s({"Retry-After": when}) <= 30


def test_rate_limiter_spaces_requests_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock, clock.sleep)
    for _ in range(5):
        limiter.acquire()
    assert clock.sleeps == [0.25] * 4 and clock.now == 101.0
    clock.now += 10  # idle time is not saved up as a burst beyond one request
    limiter.acquire()
    limiter.acquire()
    assert clock.sleeps[-1] == 0.25


def test_rate_limiter_hands_out_distinct_slots_across_threads() -> None:
    lock = threading.Lock()
    waits: list[float] = []
    limiter = RateLimiter(10.0, lambda: 0.0, lambda s: None)

    def take() -> None:
        wait = limiter.acquire()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([i / 10 for i in range(8)])


def test_no_rate_limit_never_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock, clock.sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0] * 3 and clock.sleeps == []


def test_from_settings_without_an_endpoint_is_none(isolated_home: Path) -> None:
    assert OpenAICompletionClient.from_settings(Settings()) is None


def test_from_settings_uses_the_endpoint_and_keeps_the_key_out_of_sight(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("COCKPIT_BASELINE_URL", "http://head-node:8000/v1/")
    monkeypatch.setenv("COCKPIT_BASELINE_MODEL", "served-model")
    monkeypatch.setenv("BASELINE_KEY", secret)
    settings = Settings(CockpitFile(baseline=BaselineSection(api_key_env="BASELINE_KEY")))
    client = OpenAICompletionClient.from_settings(settings, max_attempts=2)
    assert client is not None and client.url == "http://head-node:8000/v1/completions"
    assert client.model == "served-model" and client.max_attempts == 2
    assert secret not in repr(client) and secret not in str(client) and secret not in repr(vars(client))
    assert client._client.api_key == secret


def test_from_settings_without_a_model_says_so(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCKPIT_BASELINE_URL", "http://head-node:8000/v1")
    with pytest.raises(BadInput, match="http://head-node:8000/v1: no baseline model"):
        OpenAICompletionClient.from_settings(Settings())


def test_a_missing_key_is_a_placeholder(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("COCKPIT_BASELINE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("COCKPIT_BASELINE_MODEL", "m")
    client = OpenAICompletionClient.from_settings(Settings())
    assert client is not None and client._client.api_key == "unused"
