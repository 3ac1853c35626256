"""Step records and traces: what the engine produces and everything else (UI, benchmarks) reads.

A trace is a run's settings plus one StepRecord per step, saved as JSON with a schema version.
`docs/trace.md` documents every field.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mambaviz.errors import TraceError

SCHEMA_VERSION = 1
MAX_TRACE_BYTES = 50 * 1024 * 1024


@dataclass
class NodeRecord:
    """One drafted token of a step's draft tree."""

    id: int
    parent: int  # -1 for the root
    depth: int
    token: int
    text: str
    draft_prob: float
    path_prob: float  # drafter probability of the whole path from the root to this node
    target_prob: float
    accept_prob: float | None  # probability of acceptance when the node was tried, None if never tried
    status: str  # accepted, rejected or unvisited


@dataclass
class StepRecord:
    """One draft → verify → commit cycle: exactly one target forward pass."""

    index: int
    context_length: int  # committed tokens (prompt included) before this step
    shape: list[int]  # branching factors per depth of a fixed shape (cut to fit the token limit or the context); [] for dynamic trees
    root_token: int
    root_text: str
    nodes: list[NodeRecord]
    accepted: list[int]  # node ids of the accepted path, depth 1 first
    bonus_token: int
    bonus_text: str
    committed: list[int]  # tokens committed by this step: the accepted path then the bonus token
    committed_text: list[str]
    draft_seconds: float
    verify_seconds: float
    other_seconds: float
    forward_seconds: float  # time inside model forward passes (drafter and target)
    drafter_cache_bytes: int
    target_cache_bytes: int
    peak_memory_bytes: int
    stop_reason: str | None = None  # eos, max_new_tokens or context when the run ended in this step
    policy: dict[str, Any] | None = None  # the tree-shape policy's decision, if the policy reports one

    @property
    def accepted_length(self) -> int:
        return len(self.committed)

    @property
    def step_seconds(self) -> float:
        return self.draft_seconds + self.verify_seconds + self.other_seconds


@dataclass
class Trace:
    """A whole run: its settings and its steps."""

    settings: dict[str, Any]
    prompt_ids: list[int]
    steps: list[StepRecord] = field(default_factory=list)
    prefill_seconds: float = 0.0
    text: str = ""  # the decoded new tokens
    schema_version: int = SCHEMA_VERSION

    @property
    def new_tokens(self) -> list[int]:
        return [token for step in self.steps for token in step.committed]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_json(cls, data: Any) -> Trace:
        """Rebuild a trace from parsed JSON, raising TraceError on anything that does not fit the schema."""
        if not isinstance(data, dict):
            raise TraceError("The trace is invalid: its top level must be a JSON object.")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TraceError(f"The trace has schema version {version!r}; this mambaviz reads version {SCHEMA_VERSION}.")
        try:
            steps = [_build(StepRecord, step, nodes=[_build(NodeRecord, node) for node in step["nodes"]])
                     for step in data["steps"]]
            return _build(cls, data, steps=steps)
        except (KeyError, TypeError) as error:
            raise TraceError(f"The trace is invalid: {error} does not fit schema version {SCHEMA_VERSION}.") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a trace file of at most 50 MB."""
        path = Path(path)
        if not path.is_file():
            raise TraceError(f"Trace file {path} not found.")
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise TraceError(f"Trace file {path.name} is {size / 2**20:.1f} MB; traces of at most 50 MB are accepted.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TraceError(f"Trace file {path.name} is not valid JSON ({error}).") from None
        return cls.from_json(data)


def _build(cls, data: dict[str, Any], **overrides: Any):
    """Construct dataclass `cls` from `data`, requiring every field without a default."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} entry {data!r:.40}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise TypeError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    values = {name: value for name, value in data.items() if name in names}
    values.update(overrides)
    return cls(**values)


def summarize(trace: Trace) -> dict[str, Any]:
    """Return the run's figures: tokens/s, mean accepted length, acceptance rates, times and memory.

    The acceptance rate counts drafted tokens on visited positions only, that is nodes the target
    tried (accepted or rejected), overall and per depth.
    """
    steps = trace.steps
    new_tokens = len(trace.new_tokens)
    step_seconds = sum(step.step_seconds for step in steps)

    tried_by_depth: dict[int, int] = {}
    accepted_by_depth: dict[int, int] = {}
    for step in steps:
        for node in step.nodes:
            if node.status == "unvisited":
                continue
            tried_by_depth[node.depth] = tried_by_depth.get(node.depth, 0) + 1
            accepted_by_depth[node.depth] = accepted_by_depth.get(node.depth, 0) + (node.status == "accepted")
    tried = sum(tried_by_depth.values())
    accepted = sum(accepted_by_depth.values())

    return {
        "new_tokens": new_tokens,
        "steps": len(steps),
        "mean_accepted_length": new_tokens / len(steps) if steps else 0.0,
        "acceptance_rate": accepted / tried if tried else None,
        "acceptance_rate_by_depth": {
            str(depth): accepted_by_depth[depth] / tried_by_depth[depth] for depth in sorted(tried_by_depth)
        },
        "tokens_per_second": new_tokens / step_seconds if step_seconds > 0 else 0.0,
        "prefill_seconds": trace.prefill_seconds,
        "decode_seconds": step_seconds,
        "draft_seconds": sum(step.draft_seconds for step in steps),
        "verify_seconds": sum(step.verify_seconds for step in steps),
        "other_seconds": sum(step.other_seconds for step in steps),
        "forward_seconds": sum(step.forward_seconds for step in steps),
        "drafter_cache_bytes": steps[-1].drafter_cache_bytes if steps else 0,
        "max_drafter_cache_bytes": max((step.drafter_cache_bytes for step in steps), default=0),
        "target_cache_bytes": steps[-1].target_cache_bytes if steps else 0,
        "peak_memory_bytes": max((step.peak_memory_bytes for step in steps), default=0),
        "stop_reason": steps[-1].stop_reason if steps else None,
    }
