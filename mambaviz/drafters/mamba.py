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
batch axis, so every node keeps the state after consuming its own token. Committed tokens (the
prompt, and one or two pending tokens each step) go through `MambaStepper.scan` instead, which runs
each linear layer once over all of them and the recurrence with the chunked selective scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mambaviz.drafters.base import Drafter
from mambaviz.metrics import ForwardClock, tensor_bytes
from mambaviz.scan import DEFAULT_CHUNK_LENGTH, causal_depthwise_conv, selective_scan_with_state
from mambaviz.tree import ROOT, DraftTree

logger = logging.getLogger(__name__)

SCAN_BLOCK = 256  # tokens per block of `MambaStepper.scan`, which bounds its [t, e, n] temporaries


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


@dataclass
class LayerWeights:
    """One Mamba block's parameters as plain tensors, so a step calls no nn.Module."""

    norm_weight: torch.Tensor  # [d]
    norm_eps: float
    residual_in_fp32: bool
    in_weight: torch.Tensor  # [2e, d]
    in_bias: torch.Tensor | None
    conv_weight: torch.Tensor  # [e, k]
    conv_bias: torch.Tensor | None
    x_weight: torch.Tensor  # [r + 2n, d]
    dt_weight: torch.Tensor  # [e, r]
    dt_bias: torch.Tensor  # [e]
    A: torch.Tensor  # [e, n] fp32, A = -exp(A_log)
    D: torch.Tensor  # [e]
    out_weight: torch.Tensor  # [d, e]
    out_bias: torch.Tensor | None

    @classmethod
    def of(cls, block) -> LayerWeights:
        mixer = block.mixer
        return cls(
            norm_weight=block.norm.weight.detach(),
            norm_eps=block.norm.variance_epsilon,
            residual_in_fp32=block.residual_in_fp32,
            in_weight=mixer.in_proj.weight.detach(),
            in_bias=_detached(mixer.in_proj.bias),
            conv_weight=mixer.conv1d.weight.detach()[:, 0, :],
            conv_bias=_detached(mixer.conv1d.bias),
            x_weight=mixer.x_proj.weight.detach(),
            dt_weight=mixer.dt_proj.weight.detach(),
            dt_bias=mixer.dt_proj.bias.detach(),
            A=-torch.exp(mixer.A_log.detach().float()),
            D=mixer.D.detach(),
            out_weight=mixer.out_proj.weight.detach(),
            out_bias=_detached(mixer.out_proj.bias),
        )


def _detached(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach()


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as MambaRMSNorm computes it: in fp32, the result cast back to the input dtype."""
    hidden32 = hidden.float()
    normed = hidden32 * torch.rsqrt(hidden32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(hidden.dtype)


class MambaStepper:
    """Runs the recurrent step of every layer of a `MambaForCausalLM` on its own parameters.

    The step calls tensor functions directly rather than the model's modules, which saves the
    modules' per-call overhead. At batch 1 on CPU the step is still bound by reading the weights
    from memory (about 11 MB in fp32 for the bundled drafter), not by arithmetic.
    """

    def __init__(self, model, use_cuda_kernels: bool = True):
        config = model.config
        backbone = model.backbone
        self.layers = [LayerWeights.of(block) for block in backbone.layers]
        self.embeddings = backbone.embeddings.weight.detach()  # [v, d]
        self.norm_f_weight = backbone.norm_f.weight.detach()
        self.norm_f_eps = backbone.norm_f.variance_epsilon
        self.head = model.lm_head.weight.detach()  # [v, d]
        self.d_state = config.state_size
        self.d_conv = config.conv_kernel
        self.d_inner = config.intermediate_size
        self.dt_rank = int(config.time_step_rank)
        self.device, self.dtype = self.embeddings.device, self.embeddings.dtype

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
        hidden, state = self._layers(F.embedding(tokens, self.embeddings), state, self._mixer_step)  # [b, d]
        return self._logits(hidden), state

    @torch.inference_mode()
    def scan(self, tokens: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """Consume a sequence on one batch row: tokens [t] → the last token's logits [1, v] and the new state.

        Equals `step` once per token up to rounding, at the cost of about one step per SCAN_BLOCK
        tokens for the linear layers.
        """
        for start in range(0, len(tokens), SCAN_BLOCK):
            hidden = F.embedding(tokens[start : start + SCAN_BLOCK], self.embeddings)[None]  # [1, t, d]
            hidden, state = self._layers(hidden, state, self._mixer_scan)
        return self._logits(hidden[:, -1]), state

    def _layers(self, hidden: torch.Tensor, state: MambaState, mixer) -> tuple[torch.Tensor, MambaState]:
        """Run every block on `hidden` [..., d] with `mixer` (one step or a scan) and return it with the new state."""
        new_conv, new_ssm = [], []
        # Dtypes follow MambaBlock: the residual stream may stay fp32 while layers run in the model dtype.
        for index, layer in enumerate(self.layers):
            residual = hidden.float() if layer.residual_in_fp32 else hidden
            normed = rms_norm(hidden.to(layer.norm_weight.dtype), layer.norm_weight, layer.norm_eps)
            mixed, conv, ssm = mixer(layer, normed, state.conv[index], state.ssm[index])
            hidden = residual + mixed
            new_conv.append(conv)
            new_ssm.append(ssm)
        return hidden, MambaState(torch.stack(new_conv), torch.stack(new_ssm))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = rms_norm(hidden, self.norm_f_weight, self.norm_f_eps)
        return F.linear(hidden.to(self.dtype), self.head).float()  # [b, v]

    def _mixer_scan(self, layer: LayerWeights, hidden: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor):
        x, z = F.linear(hidden, layer.in_weight, layer.in_bias).chunk(2, dim=-1)  # [1, t, e] each
        # The conv window holds the last k inputs, so its last k - 1 precede this block.
        inputs = torch.cat([conv.transpose(1, 2), x], dim=1)  # [1, k + t, e]
        conv = inputs[:, -self.d_conv :].transpose(1, 2).contiguous()  # [1, e, k]
        x = F.silu(causal_depthwise_conv(x, layer.conv_weight[:, None, :], layer.conv_bias, inputs[:, 1 : self.d_conv]))

        dt, B, C = torch.split(F.linear(x, layer.x_weight), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(F.linear(dt, layer.dt_weight, layer.dt_bias).float())  # [1, t, e]
        chunk_length = min(x.shape[1], DEFAULT_CHUNK_LENGTH)  # no padding for a pending token or two
        y, ssm = selective_scan_with_state(
            x.float(), dt, layer.A, B.float(), C.float(), layer.D.float(), ssm, chunk_length=chunk_length
        )
        y = y * F.silu(z.float())  # [1, t, e]
        return F.linear(y.to(hidden.dtype), layer.out_weight, layer.out_bias), conv, ssm

    def _mixer_step(self, layer: LayerWeights, hidden: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor):
        x, z = F.linear(hidden, layer.in_weight, layer.in_bias).chunk(2, dim=-1)  # [b, e] each

        if self.causal_conv1d_update is not None:
            conv = conv.clone()  # the kernel updates the window in place
            x = self.causal_conv1d_update(x, conv, layer.conv_weight, layer.conv_bias, "silu")
        else:
            conv = torch.cat([conv[:, :, 1:], x.unsqueeze(-1)], dim=-1)  # [b, e, k]
            x = (conv * layer.conv_weight).sum(dim=-1)  # [b, e]
            if layer.conv_bias is not None:
                x = x + layer.conv_bias
            x = F.silu(x)

        dt, B, C = torch.split(F.linear(x, layer.x_weight), [self.dt_rank, self.d_state, self.d_state], dim=-1)

        if self.selective_state_update is not None:
            dt = F.linear(dt, layer.dt_weight)  # [b, e], the kernel adds the bias before its softplus
            ssm = ssm.clone()  # the kernel updates the state in place
            y = self.selective_state_update(
                ssm, x, dt, layer.A, B, C, layer.D, z=z, dt_bias=layer.dt_bias, dt_softplus=True
            )
        else:
            dt = F.softplus(F.linear(dt, layer.dt_weight, layer.dt_bias).float())  # [b, e]
            x32 = x.float()
            decay = torch.exp(dt.unsqueeze(-1) * layer.A)  # [b, e, n]
            ssm = torch.addcmul(ssm * decay, (dt * x32).unsqueeze(-1), B.float().unsqueeze(1))  # [b, e, n]
            y = torch.bmm(ssm, C.float().unsqueeze(-1)).squeeze(-1)  # [b, e]
            y = torch.addcmul(y, x32, layer.D.float()) * F.silu(z.float())
        return F.linear(y.to(hidden.dtype), layer.out_weight, layer.out_bias), conv, ssm


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
        ids = torch.tensor(tokens, device=self.device)
        with self.clock.measure():
            if len(tokens) == 1:
                logits, self.state = self.stepper.step(ids, self.state)
            else:
                logits, self.state = self.stepper.scan(ids, self.state)
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
