"""Model presets and loading: hub ids or local folders, device and dtype, tokenizer checks.

Device and dtype are decided here and nowhere else: CUDA when present, bf16 there and fp32 on CPU.
Weights load from safetensors only and `trust_remote_code` stays off.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mambaviz.errors import ModelLoadError, MambavizError

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DRAFTER_NAMES = ("mamba", "transformer", "none")


@dataclass(frozen=True)
class Preset:
    target: str
    mamba: str
    transformer: str
    cpu_target: str | None = None  # a smaller target used when no GPU is present


PRESETS = {
    "bundled": Preset(
        target=str(ASSETS / "models" / "target"),
        mamba=str(ASSETS / "models" / "mamba"),
        transformer=str(ASSETS / "models" / "transformer"),
    ),
    "pythia": Preset(
        target="EleutherAI/pythia-1.4b-deduped",
        cpu_target="EleutherAI/pythia-410m-deduped",
        mamba="state-spaces/mamba-130m-hf",
        transformer="EleutherAI/pythia-160m-deduped",
    ),
}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise MambavizError(f"Device {device!r} is invalid; use auto, cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MambavizError(f"Device {device!r} was requested but CUDA is not available; use auto or cpu.")
    return resolved


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def preset_paths(name: str, device: torch.device) -> dict[str, str]:
    """Return the target and drafter locations of preset `name`."""
    if name not in PRESETS:
        raise MambavizError(f"Unknown preset {name!r}; available presets: {', '.join(PRESETS)}.")
    preset = PRESETS[name]
    target = preset.cpu_target if device.type == "cpu" and preset.cpu_target else preset.target
    return {"target": target, "mamba": preset.mamba, "transformer": preset.transformer}


def is_local(location: str) -> bool:
    """Return whether `location` names a folder rather than a hub id (`org/name` has at most one slash)."""
    return os.path.exists(location) or location.startswith((".", "/", "~")) or location.count("/") > 1


def check_checkpoint(location: str) -> None:
    """Raise ModelLoadError when a local checkpoint folder is missing, incomplete or pickle-only."""
    if not is_local(location):
        return
    folder = Path(location).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"Checkpoint folder {location} not found; pass a folder with config.json and"
                             " .safetensors weights, or a hub id such as EleutherAI/pythia-160m-deduped.")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"Checkpoint folder {location} has no config.json; it is not a Hugging Face checkpoint.")
    if not any(folder.glob("*.safetensors")):
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
            raise ModelLoadError(f"Checkpoint folder {location} contains only pickle weights (.bin/.pt); mambaviz loads"
                                 " safetensors only: convert them with `model.save_pretrained(folder)`.")
        raise ModelLoadError(f"Checkpoint folder {location} has no .safetensors weights.")


def load_tokenizer(location: str):
    from transformers import AutoTokenizer

    check_checkpoint(location)
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(location), trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"Could not load a tokenizer from {location}: {_first_line(error)}") from None


def load_causal_lm(location: str, device: torch.device, dtype: torch.dtype, role: str):
    """Load a causal LM for `role` (target, mamba or transformer) in eval mode on `device`."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    # One log line per load replaces the per-shard progress bars, which would clutter CLI errors.
    transformers_logging.disable_progress_bar()

    check_checkpoint(location)
    path = os.path.expanduser(location)
    start = time.perf_counter()
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"Could not load the {role} config from {location}: {_first_line(error)}") from None

    model_type = getattr(config, "model_type", "")
    if role == "mamba" and model_type != "mamba":
        raise ModelLoadError(f"{location} is a {model_type!r} model; the Mamba drafter needs a MambaForCausalLM"
                             " checkpoint (model_type 'mamba', e.g. state-spaces/mamba-130m-hf).")
    if role != "mamba" and model_type.startswith("mamba"):
        raise ModelLoadError(f"{location} is a {model_type!r} model; the {role} must be a Transformer causal LM"
                             " such as GPT-NeoX or Llama.")

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
    except Exception as error:  # noqa: BLE001 - safetensors, torch and transformers raise many types here
        raise ModelLoadError(f"Could not load the {role} from {location}: {_first_line(error)}") from None
    model.to(device).eval()
    model.requires_grad_(False)

    parameters = sum(p.numel() for p in model.parameters())
    logger.info("loaded %s %s (%s, %.1fM parameters) on %s as %s in %.2f s", role, location, model_type,
                parameters / 1e6, device, str(dtype).removeprefix("torch."), time.perf_counter() - start)
    return model


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def output_rows(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def context_limit(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_same_tokenizer(target_tokenizer, target_location: str, drafter_location: str) -> None:
    """Raise ModelLoadError when the drafter's tokenizer maps tokens differently from the target's."""
    try:
        drafter_tokenizer = load_tokenizer(drafter_location)
    except ModelLoadError:
        logger.warning("no tokenizer found at %s: assuming it is the target's", drafter_location)
        return
    if drafter_tokenizer.get_vocab() != target_tokenizer.get_vocab():
        raise ModelLoadError(f"The drafter at {drafter_location} uses a different tokenizer from the target at"
                             f" {target_location}; drafter and target must map tokens to the same ids.")


@dataclass
class ModelSet:
    """A loaded target with its tokenizer, and the drafters loaded so far (loaded on first use)."""

    locations: dict[str, str]
    device: torch.device
    dtype: torch.dtype
    tokenizer: object
    target: object
    vocab_size: int
    max_context: int | None
    eos_token_id: int | None
    drafter_models: dict[str, object] = field(default_factory=dict)
    _token_texts: list[str] | None = None

    def drafter_model(self, name: str):
        """Return the model of drafter `name` (mamba or transformer), loading it on first use."""
        if name not in ("mamba", "transformer"):
            raise MambavizError(f"Unknown drafter {name!r}; choose one of {', '.join(DRAFTER_NAMES)}.")
        if name not in self.drafter_models:
            location = self.locations.get(name)
            if not location:
                raise MambavizError(f"No {name} drafter is configured; pass --{name} PATH or choose a preset.")
            check_same_tokenizer(self.tokenizer, self.locations["target"], location)
            model = load_causal_lm(location, self.device, self.dtype, name)
            if output_rows(model) < self.vocab_size:
                raise ModelLoadError(f"The {name} drafter at {location} has {output_rows(model)} output rows, fewer"
                                     f" than the tokenizer's {self.vocab_size} tokens.")
            self.drafter_models[name] = model
        return self.drafter_models[name]

    def token_texts(self) -> list[str]:
        """Return every token id's text, decoded once per model set."""
        if self._token_texts is None:
            self._token_texts = self.tokenizer.batch_decode([[i] for i in range(self.vocab_size)])
        return self._token_texts


def load_model_set(
    preset: str | None = "bundled",
    target: str | None = None,
    mamba: str | None = None,
    transformer: str | None = None,
    device: str = "auto",
) -> ModelSet:
    """Load the target and tokenizer of a preset, or of explicit locations that override the preset's."""
    resolved = resolve_device(device)
    locations = preset_paths(preset, resolved) if preset else {}
    for role, location in (("target", target), ("mamba", mamba), ("transformer", transformer)):
        if location:
            locations[role] = location
    if not locations.get("target"):
        raise MambavizError("No target model given; pass --preset NAME or --target PATH.")

    dtype = default_dtype(resolved)
    tokenizer = load_tokenizer(locations["target"])
    model = load_causal_lm(locations["target"], resolved, dtype, "target")
    vocab_size = len(tokenizer)
    if output_rows(model) < vocab_size:
        raise ModelLoadError(f"The target at {locations['target']} has {output_rows(model)} output rows, fewer than"
                             f" its tokenizer's {vocab_size} tokens.")
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    return ModelSet(locations, resolved, dtype, tokenizer, model, vocab_size, context_limit(model.config), eos)
