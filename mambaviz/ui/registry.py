"""Models shared by every user of the app: each model set loads once and is reused by all sessions.

Loading takes a lock, so two users who pick the same new models at once load them once. Runs on
loaded models take no lock: forward passes keep no state in the model, and each run keeps its own
caches.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mambaviz.errors import MambavizError
from mambaviz.models import ModelSet, load_model_set, preset_paths, resolve_device

logger = logging.getLogger(__name__)

CUSTOM = "custom"


@dataclass(frozen=True)
class ModelChoice:
    """Locations of the target and the two drafters: hub ids or local folders."""

    target: str
    mamba: str | None
    transformer: str | None

    def describe(self) -> str:
        return (f"target {self.target}, Mamba drafter {self.mamba or 'none given'},"
                f" Transformer drafter {self.transformer or 'none given'}")


def resolve_choice(preset: str, target: str | None, mamba: str | None, transformer: str | None,
                   device: str) -> ModelChoice:
    """Turn the run panel's model fields into a ModelChoice: a preset's locations, or the custom ones."""
    if preset == CUSTOM:
        target, mamba, transformer = (value.strip() if value else None for value in (target, mamba, transformer))
        if not target:
            raise MambavizError("Custom models need a target: enter a hub id or a local folder for the target.")
        return ModelChoice(target, mamba or None, transformer or None)
    paths = preset_paths(preset, resolve_device(device))
    return ModelChoice(paths["target"], paths["mamba"], paths["transformer"])


class ModelRegistry:
    """Loaded model sets by ModelChoice, keeping the `capacity` most recently used ones.

    A model set dropped from the registry stays alive while a run still uses it.
    """

    def __init__(self, device: str = "auto", capacity: int = 2):
        self.device = device
        self.capacity = capacity
        self._sets: OrderedDict[ModelChoice, ModelSet] = OrderedDict()
        self._lock = threading.Lock()

    def loaded(self) -> list[ModelChoice]:
        with self._lock:
            return list(self._sets)

    def get(self, choice: ModelChoice, on_progress: Callable[[float, str], None] | None = None) -> ModelSet:
        """Return the model set of `choice`, loading its target and tokenizer on first use."""
        report = on_progress or (lambda fraction, text: None)
        with self._lock:
            if choice in self._sets:
                self._sets.move_to_end(choice)
                return self._sets[choice]
            report(0.0, f"Loading the target from {choice.target}")
            models = load_model_set(None, target=choice.target, mamba=choice.mamba,
                                    transformer=choice.transformer, device=self.device)
            self._sets[choice] = models
            while len(self._sets) > self.capacity:
                dropped, _ = self._sets.popitem(last=False)
                logger.info("model registry full: dropped %s", dropped.describe())
            return models

    def ensure_drafter(self, models: ModelSet, name: str,
                       on_progress: Callable[[float, str], None] | None = None) -> None:
        """Load drafter `name` (mamba or transformer) into `models` unless it is loaded; `none` needs nothing."""
        if name == "none":
            return
        with self._lock:
            if name not in models.drafter_models and on_progress is not None:
                on_progress(0.5, f"Loading the {name} drafter from {models.locations.get(name)}")
            models.drafter_model(name)
