"""Traces save to versioned JSON and load back unchanged; bad files are rejected clearly."""

import json

import pytest

from mambaviz.engine import RunSettings, run
from mambaviz.errors import TraceError
from mambaviz.sampling import SamplingConfig
from mambaviz.search import FixedShape
from mambaviz.trace import SCHEMA_VERSION, Trace, summarize


@pytest.fixture(scope="module")
def sampled_trace(code_models):
    settings = RunSettings("mamba", 20, SamplingConfig(temperature=0.8, top_k=20), seed=3)
    return run(code_models, "def add(a, b):", settings, FixedShape((3, 2, 1)))


def test_trace_round_trip_is_unchanged(sampled_trace, tmp_path):
    path = tmp_path / "trace.json"
    sampled_trace.save(path)
    loaded = Trace.load(path)
    assert loaded == sampled_trace
    assert summarize(loaded) == summarize(sampled_trace)
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_trace_summary_figures(sampled_trace):
    figures = summarize(sampled_trace)
    assert figures["new_tokens"] == len(sampled_trace.new_tokens) == 20
    assert figures["mean_accepted_length"] == pytest.approx(20 / len(sampled_trace.steps))
    assert figures["tokens_per_second"] > 0
    assert set(figures["acceptance_rate_by_depth"]) <= {"1", "2", "3"}
    assert figures["stop_reason"] == "max_new_tokens"


def test_trace_text_is_decoded_new_tokens(sampled_trace, code_models):
    assert sampled_trace.text == code_models.tokenizer.decode(sampled_trace.new_tokens)


def test_trace_load_rejects_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(TraceError, match="not valid JSON"):
        Trace.load(path)


def test_trace_load_rejects_other_schema_version(sampled_trace, tmp_path):
    data = sampled_trace.to_json()
    data["schema_version"] = 99
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TraceError, match="schema version 99"):
        Trace.load(path)


def test_trace_load_rejects_missing_field(sampled_trace, tmp_path):
    data = sampled_trace.to_json()
    del data["steps"][0]["nodes"][0]["status"]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TraceError, match="invalid"):
        Trace.load(path)


def test_trace_load_rejects_non_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(TraceError, match="JSON object"):
        Trace.load(path)


def test_trace_load_rejects_oversized_file(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as handle:
        handle.truncate(50 * 1024 * 1024 + 1)
    with pytest.raises(TraceError, match="at most 50 MB"):
        Trace.load(path)


def test_trace_load_rejects_missing_file(tmp_path):
    with pytest.raises(TraceError, match="not found"):
        Trace.load(tmp_path / "absent.json")
