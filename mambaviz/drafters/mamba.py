"""Mamba drafter: a lean recurrent step over Hugging Face `MambaForCausalLM` weights.

Shape letters: `b` batch (tree nodes fed together), `l` layers, `d` d_model, `e` d_inner (the
expanded width, `intermediate_size`), `n` d_state (the SSM state size N), `k` d_conv (conv width),
`r` dt rank, `v` vocabulary.

One layer's recurrent step, following the Mamba paper's selective SSM (Gu & Dao, 2023, Algorithm 2)
discretized with zero-order hold for A and Euler for B, as the official code does:

    x, z  = in_proj(rmsnorm(h))                   # [b, e] each
    conv  = shift conv window left, append x      # [b, e, k]
    x     = silu(sum_k(conv * w) + bias)          # depthwise causal conv, one output
    Δ, B, C = split(x_proj(x)); Δ = softplus(dt_proj(Δ))
    s     = exp(Δ A) * s + Δ B x                  # [b, e, n], A = -exp(A_log)
    y     = (s C + D x) * silu(z)
    h     = h + out_proj(y)

The drafter cache is the conv window [l, b, e, k] and the SSM state [l, b, e, n]: fixed in size
whatever the context length. Drafting a tree gathers each parent's state row once per child on the
batch axis, so every node keeps the state after consuming its own token.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from mambaviz.drafters.base import Drafter
from mambaviz.metrics import ForwardClock, tensor_bytes
from mambaviz.tree import ROOT, DraftTree

logger = logging.getLogger(__name__)


def _load_cuda_kernels():
    """Return mamba-ssm's `selective_state_update` and causal-conv1d's `causal_conv1d_update`, or Nones."""
    try:
        from causal_conv1d import causal_conv1d_update
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except ImportError:
        return None, None
    return selective_state_update, causal_conv1d_update


class MambaState:
    """Conv windows [l, b, e, k] and SSM states [l, b, e, n] of `b` sequences."""

    def __init__(self, conv: torch.Tensor, ssm: torch.Tensor):
        self.conv = conv
        self.ssm = ssm

    def select(self, rows: torch.Tensor) -> MambaState:
        """Gather batch rows (a row repeated once per child when expanding a tree)."""
        return MambaState(self.conv.index_select(1, rows), self.ssm.index_select(1, rows))

    def nbytes(self) -> int:
        return tensor_bytes(self.conv, self.ssm)


class MambaStepper:
    """Runs the recurrent step of every layer of a `MambaForCausalLM` on its own parameters."""

    def __init__(self, model, use_cuda_kernels: bool = True):
        config = model.config
        self.model = model
        self.backbone = model.backbone
        self.layers = [block for block in self.backbone.layers]
        self.d_state = config.state_size
        self.d_conv = config.conv_kernel
        self.d_inner = config.intermediate_size
        self.dt_rank = int(config.time_step_rank)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        # A = -exp(A_log) per layer, computed once: [e, n] in fp32 like the reference.
        self.A = [-torch.exp(block.mixer.A_log.detach().float()) for block in self.layers]
        self.conv_weights = [block.mixer.conv1d.weight.detach()[:, 0, :] for block in self.layers]  # [e, k]

        self.selective_state_update, self.causal_conv1d_update = (None, None)
        if use_cuda_kernels and self.device.type == "cuda":
            self.selective_state_update, self.causal_conv1d_update = _load_cuda_kernels()
            if self.selective_state_update is None:
                logger.warning("mamba-ssm or causal-conv1d not installed: using the torch step")

    def zero_state(self, batch: int = 1) -> MambaState:
        layers = len(self.layers)
        conv = torch.zeros(layers, batch, self.d_inner, self.d_conv, device=self.device, dtype=self.dtype)
        ssm = torch.zeros(layers, batch, self.d_inner, self.d_state, device=self.device, dtype=torch.float32)
        return MambaState(conv, ssm)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """Consume one token per row: tokens [b] → logits [b, v] and the new state (the input is untouched)."""
        hidden = self.backbone.embeddings(tokens)  # [b, d]
        new_conv, new_ssm = [], []
        # Dtypes follow MambaBlock: the residual stream may stay fp32 while layers run in the model dtype.
        for index, block in enumerate(self.layers):
            residual = hidden.float() if block.residual_in_fp32 else hidden
            normed = block.norm(hidden.to(block.norm.weight.dtype))
            mixed, conv, ssm = self._mixer_step(index, block.mixer, normed, state.conv[index], state.ssm[index])
            hidden = residual + mixed  # [b, d]
            new_conv.append(conv)
            new_ssm.append(ssm)
        hidden = self.backbone.norm_f(hidden)
        logits = self.model.lm_head(hidden.to(self.dtype)).float()  # [b, v]
        return logits, MambaState(torch.stack(new_conv), torch.stack(new_ssm))

    def _mixer_step(self, index: int, mixer, hidden: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor):
        x, z = mixer.in_proj(hidden).chunk(2, dim=-1)  # [b, e] each

        if self.causal_conv1d_update is not None:
            conv = conv.clone()  # the kernel updates the window in place
            x = self.causal_conv1d_update(x, conv, self.conv_weights[index], mixer.conv1d.bias, "silu")
        else:
            conv = torch.cat([conv[:, :, 1:], x.unsqueeze(-1)], dim=-1)  # [b, e, k]
            x = (conv * self.conv_weights[index]).sum(dim=-1)  # [b, e]
            if mixer.conv1d.bias is not None:
                x = x + mixer.conv1d.bias
            x = F.silu(x)

        dt, B, C = torch.split(mixer.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ mixer.dt_proj.weight.T  # [b, e], bias added with the softplus below

        if self.selective_state_update is not None:
            ssm = ssm.clone()  # the kernel updates the state in place
            y = self.selective_state_update(
                ssm, x, dt, self.A[index], B, C, mixer.D, z=z, dt_bias=mixer.dt_proj.bias, dt_softplus=True
            )
        else:
            dt = F.softplus((dt + mixer.dt_proj.bias).float())  # [b, e]
            decay = torch.exp(dt.unsqueeze(-1) * self.A[index])  # [b, e, n]
            ssm = ssm * decay + (dt * x.float()).unsqueeze(-1) * B.float().unsqueeze(1)  # [b, e, n]
            y = (ssm @ C.float().unsqueeze(-1)).squeeze(-1)  # [b, e]
            y = (y + x.float() * mixer.D.float()) * F.silu(z.float())
        return mixer.out_proj(y.to(hidden.dtype)), conv, ssm


class MambaDrafter(Drafter):
    """Drafts trees with a `MambaForCausalLM`; its cache is one fixed-size recurrent state."""

    name = "mamba"

    def __init__(self, model, vocab_size: int, clock: ForwardClock | None = None, use_cuda_kernels: bool = True):
        self.stepper = MambaStepper(model, use_cuda_kernels=use_cuda_kernels)
        super().__init__(vocab_size, self.stepper.device, clock)
        self.state = self.stepper.zero_state()
        self.level_states: list[MambaState] = []  # per depth: states of that depth's fed nodes
        self.level_start: list[int] = []  # per depth: index of its first node

    def reset(self) -> None:
        super().reset()
        self.state = self.stepper.zero_state()

    def _consume(self, tokens: list[int]) -> torch.Tensor:
        # NOTE: the prompt is consumed one token at a time, so prefill costs one step per prompt token.
        ids = torch.tensor(tokens, device=self.device)
        with self.clock.measure():
            for token in ids:
                logits, self.state = self.stepper.step(token.view(1), self.state)
        return logits

    def _begin_tree(self) -> None:
        self.level_states = [self.state]
        self.level_start = [ROOT]

    def _extend(self, tree: DraftTree, nodes: list[int]) -> torch.Tensor:
        parent_level = self.level_states[-1]
        first_parent = self.level_start[-1]
        parent_rows = [0 if tree.parents[node] == ROOT else tree.parents[node] - first_parent for node in nodes]
        rows = torch.tensor(parent_rows, device=self.device)
        tokens = torch.tensor([tree.tokens[node] for node in nodes], device=self.device)
        with self.clock.measure():
            logits, states = self.stepper.step(tokens, parent_level.select(rows))  # [b, v]
        self.level_states.append(states)
        self.level_start.append(nodes[0])
        return logits

    def _keep_path(self, tree: DraftTree, fed_path: list[int]) -> None:
        if fed_path:
            last = fed_path[-1]
            depth = tree.depths[last]
            row = torch.tensor([last - self.level_start[depth]], device=self.device)
            self.state = self.level_states[depth].select(row)
        else:
            self.state = self.level_states[0]
        self.level_states, self.level_start = [], []

    def cache_bytes(self) -> int:
        return self.state.nbytes()
