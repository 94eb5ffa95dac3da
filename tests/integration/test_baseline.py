"""The baseline client and runner against a real OpenAI-compatible server running the built-in model."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pandas as pd
import pytest

from cockpit.sweep.baseline import BaselineError, LocalInferenceRunner, OpenAICompletionClient, RowOutcome
from cockpit.sweep.prompt_table import build_prompt_table, load_prompt_table
from cockpit.sweep.prompts import PromptRecord
from tests.integration import runs
from tests.integration.openai_server import MODEL_NAME, TinyModel, refused_url, serve

MAX_TOKENS = 6
MARKER = "@fail@"
EXHAUSTED = "no completion after 3 attempts; last error: HTTP 500"


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> TinyModel:
    return TinyModel(tiny_model_dir)


def client_for(url: str, **kw: object) -> OpenAICompletionClient:
    kw = {"timeout_s": 30.0, "backoff_base_s": 0.001, "backoff_cap_s": 0.01, **kw}
    return OpenAICompletionClient(url, MODEL_NAME, **kw)


def records(prompts: list[str]) -> list[PromptRecord]:
    return [
        PromptRecord(i // 2, "2k" if i % 2 == 0 else "4k", p, 2048, source_file="t.txt") for i, p in enumerate(prompts)
    ]


def test_completion_is_the_greedy_text_of_the_model(tiny_model_dir: Path, model: TinyModel) -> None:
    prompt = runs.PROMPTS[1]
    expected = runs.hf_reference(tiny_model_dir, [prompt], MAX_TOKENS, batch_size=1)[0]
    with serve(model) as server:
        done = client_for(server.base_url).complete(prompt, MAX_TOKENS)
    assert done.text == model.tokenizer.decode(expected, skip_special_tokens=True) and done.text
    assert done.prompt_tokens == len(model.tokenizer(prompt)["input_ids"])
    assert done.completion_tokens == len(expected) and done.finish_reason in ("stop", "length")
    assert done.latency_ms > 0 and server.requests == 1


class Ceiling(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def test_rate_limited_then_server_error_then_success(model: TinyModel) -> None:
    sleeps: list[float] = []
    with serve(model, script=[429, 500]) as server:
        client = client_for(server.base_url, backoff_base_s=7.0, backoff_cap_s=60.0, sleep=sleeps.append, rng=Ceiling())
        done = client.complete("Hi", MAX_TOKENS)
    assert server.requests == 3 and done.text == model.generate("Hi", MAX_TOKENS)[0]
    assert sleeps == [0.0, 14.0]  # the 429's Retry-After: 0, then backoff after the second failed attempt


def test_concurrency_is_bounded_by_the_client(model: TinyModel, tmp_path: Path) -> None:
    table = build_prompt_table(records([f"prompt {i}" for i in range(6)]))
    with serve(model, delay_s=0.1) as server:
        runner = LocalInferenceRunner(client_for(server.base_url, concurrency=2), MAX_TOKENS, concurrency=6)
        frame = runner.run(table, tmp_path / "out.parquet")
    assert set(frame["status"]) == {"done"} and server.max_in_flight == 2


def test_a_slow_answer_times_out(model: TinyModel) -> None:
    with serve(model, delay_s=0.5) as server:
        start = time.monotonic()
        with pytest.raises(BaselineError, match=r"2 attempts; last error: timed out after 0\.2 s"):
            client_for(server.base_url, timeout_s=0.2, max_attempts=2).complete("Hi", MAX_TOKENS)
        assert time.monotonic() - start < 0.5 * 2


def test_persistent_server_errors_use_exactly_our_attempts(model: TinyModel) -> None:
    with serve(model, script=[500] * 20) as server, pytest.raises(BaselineError, match=EXHAUSTED) as caught:
        client_for(server.base_url, max_attempts=3).complete("Hi", MAX_TOKENS)
    assert server.requests == 3  # the SDK's own retries would have made 9
    assert f"{server.base_url}/completions" in str(caught.value)


@pytest.mark.parametrize("answer, problem", [("garbage", "not JSON"), ("no-choices", "no 'choices'")])
def test_a_body_that_is_no_completion_names_the_url(model: TinyModel, answer: str, problem: str) -> None:
    with serve(model, script=[answer]) as server, pytest.raises(BaselineError, match=problem) as caught:
        client_for(server.base_url).complete("Hi", MAX_TOKENS)
    assert str(caught.value).startswith(f"{server.base_url}/completions: ") and "\n" not in str(caught.value)
    assert server.requests == 1


def test_a_bad_request_is_not_retried(model: TinyModel) -> None:
    with serve(model, script=[400]) as server, pytest.raises(BaselineError, match="HTTP 400"):
        client_for(server.base_url).complete("Hi", MAX_TOKENS)
    assert server.requests == 1


def test_a_down_endpoint_fails_quickly_naming_the_url() -> None:
    url = refused_url()
    start = time.monotonic()
    with pytest.raises(BaselineError, match="after 2 attempts; last error: cannot connect") as caught:
        client_for(url, max_attempts=2).complete("Hi", MAX_TOKENS)
    assert time.monotonic() - start < 5 and str(caught.value).startswith(f"{url}/completions: ")


def test_runner_fills_the_table_in_order_and_a_rerun_asks_nothing(model: TinyModel, tmp_path: Path) -> None:
    prompts = [*runs.PROMPTS, "The baseline endpoint answers"]
    table = build_prompt_table(records(prompts))
    out = tmp_path / "results" / "baseline_prompts.parquet"
    seen: list[RowOutcome] = []
    with serve(model) as server:
        client = client_for(server.base_url, concurrency=3)
        runner = LocalInferenceRunner(client, MAX_TOKENS, concurrency=3)
        frame = runner.run(table, out, on_row=seen.append)
        assert server.requests == len(prompts) and runner.failures == []
        written = load_prompt_table(out)
        assert written.equals(frame) and list(written["prompt"]) == prompts
        assert set(written["status"]) == {"done"} and (written["local_latency_ms"] > 0).all()
        assert list(written["local_completion"]) == [model.generate(p, MAX_TOKENS)[0] for p in prompts]
        assert sorted((o.prompt_id, o.variant) for o in seen) == sorted(
            zip(table.prompt_id, table.variant, strict=True)
        )

        again = runner.run(table, out)  # the fresh table: done rows come from the file
        assert server.requests == len(prompts) and again.equals(frame)
        assert runner.run(load_prompt_table(out), out).equals(frame) and server.requests == len(prompts)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary files left


def test_runner_keeps_going_past_a_failing_row(model: TinyModel, tmp_path: Path) -> None:
    prompts = ["The control node", f"boots {MARKER} the others", "Hi there"]
    out = tmp_path / "baseline_prompts.parquet"
    with serve(model, fail_marker=MARKER) as server:
        runner = LocalInferenceRunner(client_for(server.base_url, max_attempts=2), MAX_TOKENS, concurrency=2)
        frame = runner.run(build_prompt_table(records(prompts)), out)
        assert list(frame["status"]) == ["done", "failed", "done"] and server.requests == 4
        assert pd.isna(frame["local_completion"].iloc[1]) and frame["local_completion"].iloc[0]
        ((prompt_id, variant, message),) = runner.failures
        assert (prompt_id, variant) == (0, "4k") and "after 2 attempts" in message and server.base_url in message
        assert load_prompt_table(out).equals(frame)

        server.fail_marker = None  # the endpoint recovers: a rerun asks for the failed row only
        frame = runner.run(frame, out)
    assert list(frame["status"]) == ["done"] * 3 and server.requests == 5 and runner.failures == []
