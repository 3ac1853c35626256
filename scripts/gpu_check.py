"""GPU check: equality of the engine on CUDA in fp32 and bf16, and synchronized timings.

    python -m scripts.gpu_check [--preset bundled | --target P --mamba P --transformer P]

Runs on CUDA (or `--device cpu` to try the script itself) and prints a short report:
- whether mamba-ssm's `selective_state_update` and causal-conv1d's update kernel are in use;
- the Mamba recurrent step against `MambaForCausalLM`'s full forward (fp32 to 1e-4; bf16 max error);
- greedy speculative output against the target's own greedy decoding for both drafters and
  several tree shapes. fp32 must match exactly. bf16 reports how many tokens match before the
  first difference, because bf16 rounding can flip near-tied argmaxes between the two computations;
- drafting and verification time per step with CUDA synchronization.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from mambaviz.cli_generate import add_model_arguments
from mambaviz.drafters.mamba import MambaStepper
from mambaviz.engine import RunSettings, encode_prompt, run
from mambaviz.models import load_model_set
from mambaviz.search import FixedShape
from mambaviz.trace import summarize

PROMPTS = [
    "def read_config(path):\n    \"\"\"Load the settings file.\"\"\"\n",
    "class Queue:\n    def __init__(self):\n",
    "import sys\n\n\ndef main(argv):\n",
]
SHAPES = [(1, 1, 1, 1, 1), (3, 2, 2, 1, 1), (2, 2, 2, 1, 1, 1)]


def greedy_reference(models, prompt_ids: list[int], new_tokens: int) -> list[int]:
    sequence = list(prompt_ids)
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = models.target(torch.tensor([sequence], device=models.device)).logits[0, -1, : models.vocab_size]
            sequence.append(int(logits.argmax()))
    return sequence[len(prompt_ids):]


def matching_prefix(left: list[int], right: list[int]) -> int:
    count = 0
    for a, b in zip(left, right):
        if a != b:
            break
        count += 1
    return count


def check_mamba_step(models) -> float:
    model = models.drafter_model("mamba")
    stepper = MambaStepper(model)
    ids = torch.tensor([encode_prompt(models, PROMPTS[0])], device=models.device)
    with torch.no_grad():
        reference = model(ids).logits[0].float()
    state = stepper.zero_state()
    stepped = []
    for token in ids[0]:
        logits, state = stepper.step(token.view(1), state)
        stepped.append(logits[0])
    kernels = stepper.selective_state_update is not None
    print(f"  mamba-ssm / causal-conv1d kernels in use: {kernels}")
    return (torch.stack(stepped) - reference).abs().max().item()


def check_dtype(args, dtype: torch.dtype, new_tokens: int) -> None:
    models = load_model_set(args.preset, args.target, args.mamba, args.transformer, args.device)
    if models.dtype != dtype:
        models.target.to(dtype)
        models.dtype = dtype
    for name in ("mamba", "transformer"):
        models.drafter_model(name).to(dtype)
    label = str(dtype).removeprefix("torch.")
    print(f"{label} on {models.device}:")
    error = check_mamba_step(models)
    print(f"  Mamba step vs full forward, max |logit difference|: {error:.2e}")

    for prompt in PROMPTS:
        prompt_ids = encode_prompt(models, prompt)
        expected = greedy_reference(models, prompt_ids, new_tokens)
        for name in ("mamba", "transformer"):
            for shape in SHAPES:
                trace = run(models, prompt, RunSettings(name, new_tokens, stop_at_eos=False), FixedShape(shape))
                same = matching_prefix(trace.new_tokens, expected)
                figures = summarize(trace)
                verdict = "equal" if trace.new_tokens == expected else f"first {same} of {new_tokens} equal"
                print(f"  {name:<11} {','.join(map(str, shape)):<12} {verdict:<22}"
                      f" tau {figures['mean_accepted_length']:.2f}"
                      f" draft {1000 * figures['draft_seconds'] / figures['steps']:.2f} ms/step"
                      f" verify {1000 * figures['verify_seconds'] / figures['steps']:.2f} ms/step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens generated per prompt")
    args = parser.parse_args(argv)
    if args.device == "auto" and not torch.cuda.is_available():
        print("No CUDA device found; pass --device cpu to run the checks on the CPU.", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    check_dtype(args, torch.float32, args.new_tokens)
    check_dtype(args, torch.bfloat16, args.new_tokens)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
