"""Hand-written steps and traces with known trees, token texts and timings."""

from mambaviz.trace import NodeRecord, StepRecord, Trace

ATTACK = "<img src=x onerror=alert(1)>"
ESCAPED_ATTACK = "&lt;img src=x onerror=alert(1)&gt;"


def node(id, parent, depth, text, status, q=0.5, p=0.25, accept=None):
    return NodeRecord(id=id, parent=parent, depth=depth, token=100 + id, text=text, draft_prob=q, target_prob=p,
                      path_prob=q, accept_prob=accept, status=status)


def make_step(index=0, nodes=None, accepted=(0, 2), committed_text=None, bonus_text="x", context_length=5,
              draft=0.010, verify=0.020, other=0.001, drafter_cache=1000, target_cache=5000, stop_reason=None):
    """A step with this tree below root "def" (ids in brackets, statuses after the colon):

        root ─┬ [0] " add": accepted ─┬ [2] "(": accepted ── [4] "a": rejected
              │                       └ [3] "\\n": rejected ─ [5] "\\t": unvisited
              └ [1] ATTACK: unvisited

    The bonus token "x" hangs below node 2.
    """
    if nodes is None:
        nodes = [
            node(0, -1, 1, " add", "accepted", q=0.6, p=0.7, accept=1.0),
            node(1, -1, 1, ATTACK, "unvisited", q=0.3, p=0.1),
            node(2, 0, 2, "(", "accepted", q=0.5, p=0.9, accept=1.0),
            node(3, 0, 2, "\n", "rejected", q=0.4, p=0.05, accept=0.0),
            node(4, 2, 3, "a", "rejected", q=0.8, p=0.2, accept=0.0),
            node(5, 3, 3, "\t", "unvisited", q=0.9, p=0.0),
        ]
    texts = {n.id: n.text for n in nodes}
    if committed_text is None:
        committed_text = [texts[i] for i in accepted] + [bonus_text]
    return StepRecord(
        index=index, context_length=context_length, shape=[2, 2, 1], root_token=7, root_text="def", nodes=nodes,
        accepted=list(accepted), bonus_token=99, bonus_text=bonus_text, committed=[1] * len(committed_text),
        committed_text=committed_text, draft_seconds=draft, verify_seconds=verify, other_seconds=other,
        forward_seconds=draft + verify, drafter_cache_bytes=drafter_cache, target_cache_bytes=target_cache,
        peak_memory_bytes=10_000_000, stop_reason=stop_reason,
    )


def make_trace(steps, drafter="mamba", prompt="def", temperature=0.0):
    trace = Trace(settings={"prompt": prompt, "drafter": drafter, "tree": "2,2,1", "temperature": temperature,
                            "device": "cpu"}, prompt_ids=[7], steps=steps)
    trace.text = "".join(text for step in steps for text in step.committed_text)
    return trace
