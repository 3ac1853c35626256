"""A Hugging Face causal LM with its KV cache, fed causally or with a tree attention mask.

The target and the Transformer drafter both use it. Tree tokens go on top of the cache with a 4D
mask that lets each token attend to the whole prefix and to its own ancestors, at position ids
`prefix_len + depth`. Afterwards the cache keeps only the positions of the accepted path.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from mambaviz.errors import MambavizError
from mambaviz.metrics import ForwardClock, tensor_bytes
from mambaviz.tree import tree_attention_mask


class CachedCausalLM:
    """A causal LM plus a `DynamicCache` whose length equals the tokens it has consumed."""

    def __init__(self, model, clock: ForwardClock):
        self.model = model
        self.clock = clock
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.cache = DynamicCache()

    def reset(self) -> None:
        self.cache = DynamicCache()

    def __len__(self) -> int:
        return self.cache.get_seq_length()

    @torch.inference_mode()
    def feed(
        self, tokens: list[int], positions: list[int], allowed: torch.Tensor | None = None, tree_start: int = 0
    ) -> torch.Tensor:
        """Append `tokens` to the cache and return their logits [q, v'].

        Without `allowed` the tokens attend causally. With it, `allowed` [q, k] marks which of the k
        cache positions from `tree_start` on (the new tokens included, last) each token may attend
        to. The positions before `tree_start` are the committed prefix, visible to every token.
        """
        ids = torch.tensor([tokens], device=self.device)  # [1, q]
        position_ids = torch.tensor([positions], device=self.device)  # [1, q]
        mask = None
        if allowed is not None:
            mask = tree_attention_mask(allowed, tree_start, self.dtype, self.device)  # [1, 1, q, p + k]
        with self.clock.measure():
            output = self.model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids, cache=self.cache, use_cache=True
            )
        return output.logits[0].float()  # [q, v']

    @torch.inference_mode()
    def keep(self, start: int, tail: list[int]) -> None:
        """Keep cache positions [0, start) followed by the positions in `tail` (ascending); drop the rest."""
        if len(self) == start + len(tail) and tail == list(range(start, start + len(tail))):
            return
        index = torch.tensor(tail, device=self.device, dtype=torch.long)
        end = start + len(tail)
        for layer in self.cache.layers:
            if type(layer) is not DynamicLayer:
                raise MambavizError(
                    f"The model uses a {type(layer).__name__} KV cache; tree decoding supports full-attention"
                    " models whose cache is a DynamicLayer (for example GPT-NeoX, Llama, GPT-2)."
                )
            # Moving the kept positions down in place avoids copying the whole prefix.
            layer.keys[:, :, start:end] = layer.keys.index_select(2, index)
            layer.values[:, :, start:end] = layer.values.index_select(2, index)
            layer.keys = layer.keys[:, :, :end]
            layer.values = layer.values[:, :, :end]

    def nbytes(self) -> int:
        return sum(tensor_bytes(layer.keys, layer.values) for layer in self.cache.layers if layer.is_initialized)
