"""Chunked selective scan: trains `MambaForCausalLM` weights on CPU and feeds prompts to the Mamba drafter.

The selective scan of Mamba (Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces", 2023, Algorithm 2) is the recurrence, per channel d and state dimension n,

    h[t] = exp(dt[t] * A) * h[t-1] + dt[t] * B[t] * x[t]        (discretized with zero-order hold on A
    y[t] = C[t] . h[t] + D * x[t]                                 and Euler on B, as `transformers` does)

Without the CUDA kernels or `torch.compile`, `transformers` (5.25) runs it as a Python loop over every
position. On a 2-core CPU that trained a 2.8M-parameter Mamba at about 80 tokens/s, against about 3,500
for a GPT-NeoX of similar size. Here the sequence is cut into chunks of `chunk_length` positions:

1. every chunk runs the recurrence from a zero state, all chunks at once (chunk_length loop steps);
2. the chunks' end states are chained into each chunk's true start state (one step per chunk);
3. each position adds its start state decayed by exp(cumsum(dt * A)) inside its chunk.

Every exponent is a sum of dt * A, which is <= 0 because A < 0 and dt > 0, so nothing overflows. A
sequence of length L needs chunk_length + L / chunk_length loop steps instead of L. The same 2.8M-parameter
Mamba then trains at roughly 600 to 800 tokens/s on the same CPU (torch 2.13, batch 8 x 512).

Shape letters: b batch, l sequence length, d inner channels (`intermediate_size`), n state size
(`state_size`), c number of chunks, k chunk length, v vocabulary.
"""

import torch
import torch.nn.functional as F
from transformers import MambaForCausalLM

DEFAULT_CHUNK_LENGTH = 32


def selective_scan_sequential(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
) -> torch.Tensor:
    """Run the selective scan one position at a time: the reference the chunked scan is tested against.

    Args:
        x: (b, l, d) input of the scan, after the causal convolution and SiLU.
        dt: (b, l, d) positive step sizes, after the bias and softplus.
        A: (d, n) negative state matrix, i.e. `-exp(A_log)`.
        B: (b, l, n) input projection.
        C: (b, l, n) output projection.
        D: (d,) skip connection.

    Returns:
        (b, l, d) output y, before the gate.
    """
    batch_size, seq_len, channels = x.shape
    state = x.new_zeros(batch_size, channels, A.shape[1])  # (b, d, n)
    outputs = []
    for t in range(seq_len):
        decay = torch.exp(dt[:, t, :, None] * A)  # (b, d, n)
        state = decay * state + (dt[:, t, :, None] * B[:, t, None, :]) * x[:, t, :, None]
        outputs.append((state * C[:, t, None, :]).sum(-1))  # (b, d)
    y = torch.stack(outputs, dim=1)  # (b, l, d)
    return y + x * D


def selective_scan_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
) -> torch.Tensor:
    """Run the selective scan chunk by chunk, with the same arguments and result as `selective_scan_sequential`."""
    return selective_scan_with_state(x, dt, A, B, C, D, chunk_length=chunk_length)[0]


def selective_scan_with_state(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the chunked selective scan from `initial_state` (b, d, n) and return y and the final state.

    A None `initial_state` starts from zeros. The sequence is right-padded with dt = 0 to a multiple
    of `chunk_length`: a zero step size leaves the state unchanged (decay 1, no input), so padding
    never alters the real positions or the final state.
    """
    if chunk_length < 1:
        raise ValueError(f"chunk_length must be at least 1, got {chunk_length}")
    batch_size, seq_len, channels = x.shape
    state_size = A.shape[1]
    padding = (-seq_len) % chunk_length
    if padding:
        x_padded = F.pad(x, (0, 0, 0, padding))
        dt_padded = F.pad(dt, (0, 0, 0, padding))
        B_padded = F.pad(B, (0, 0, 0, padding))
        C_padded = F.pad(C, (0, 0, 0, padding))
    else:
        x_padded, dt_padded, B_padded, C_padded = x, dt, B, C
    num_chunks = (seq_len + padding) // chunk_length

    # Chunk-major views: chunks become extra batch rows for step 1.
    x_chunks = x_padded.reshape(batch_size * num_chunks, chunk_length, channels)  # (b*c, k, d)
    dt_chunks = dt_padded.reshape(batch_size * num_chunks, chunk_length, channels)  # (b*c, k, d)
    B_chunks = B_padded.reshape(batch_size * num_chunks, chunk_length, state_size)  # (b*c, k, n)
    C_chunks = C_padded.reshape(batch_size * num_chunks, chunk_length, state_size)  # (b*c, k, n)

    # Step 1: the recurrence inside every chunk from a zero start state. Decays and inputs of all
    # positions are computed up front so that the loop body is one multiply-add.
    decay = torch.exp(dt_chunks[..., None] * A)  # (b*c, k, d, n)
    state_input = (dt_chunks * x_chunks)[..., None] * B_chunks[:, :, None, :]  # (b*c, k, d, n)
    local_state = x.new_zeros(batch_size * num_chunks, channels, state_size)  # (b*c, d, n)
    local_states = []
    # unbind, not indexing: the backward of one unbind is one stack, the backward of every index
    # would fill a whole zero tensor.
    for step_decay, step_input in zip(decay.unbind(1), state_input.unbind(1)):
        local_state = step_decay * local_state + step_input
        local_states.append(local_state)
    local_states = torch.stack(local_states, dim=1)  # (b*c, k, d, n)
    chunk_end_states = local_state.reshape(batch_size, num_chunks, channels, state_size)  # (b, c, d, n)

    # Step 2: chain the chunks. The decay from a chunk's start to position t is exp(A * sum of dt up to t).
    # Because A does not depend on t, the cumulative sum runs over dt of shape (b*c, k, d) only.
    cumulative_decay = torch.exp(torch.cumsum(dt_chunks, dim=1)[..., None] * A)  # (b*c, k, d, n), in (0, 1]
    chunk_decay = cumulative_decay[:, -1].reshape(batch_size, num_chunks, channels, state_size)
    start_state = x.new_zeros(batch_size, channels, state_size) if initial_state is None else initial_state  # (b, d, n)
    start_states = []
    for step_decay, end_state in zip(chunk_decay.unbind(1), chunk_end_states.unbind(1)):
        start_states.append(start_state)
        start_state = step_decay * start_state + end_state
    start_states = torch.stack(start_states, dim=1).reshape(batch_size * num_chunks, 1, channels, state_size)

    # Step 3: each position's state is its local state plus its chunk's start state decayed up to it.
    states = local_states + cumulative_decay * start_states  # (b*c, k, d, n)
    y_chunks = torch.einsum("bkdn,bkn->bkd", states, C_chunks)  # (b*c, k, d)

    y = y_chunks.reshape(batch_size, num_chunks * chunk_length, channels)[:, :seq_len]  # (b, l, d)
    return y + x * D, start_state


def causal_depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, history: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply the Mamba layer's causal depthwise convolution as a sum of shifted copies of `x`.

    Equals `conv1d(x.transpose(1, 2))[..., :l]` of the layer's `nn.Conv1d` (left padding kernel - 1).
    Written out because the backward of a depthwise `nn.Conv1d` took seconds per call on CPU in
    torch 2.13, against milliseconds for these few multiply-adds.

    Args:
        x: (b, l, d) input.
        weight: (d, 1, kernel) `conv1d.weight`.
        bias: (d,) `conv1d.bias`, or None.
        history: (b, kernel - 1, d) the inputs before `x`, or None for zeros (the start of a sequence).
    """
    seq_len = x.shape[1]
    kernel_size = weight.shape[-1]
    if history is None:
        padded = F.pad(x, (0, 0, kernel_size - 1, 0))  # (b, l + kernel - 1, d)
    else:
        padded = torch.cat([history, x], dim=1)  # (b, l + kernel - 1, d)
    out = padded[:, kernel_size - 1 :] * weight[:, 0, kernel_size - 1]
    for offset in range(kernel_size - 1):
        out = out + padded[:, offset : offset + seq_len] * weight[:, 0, offset]  # (b, l, d)
    if bias is not None:
        out = out + bias
    return out


def mamba_training_forward(
    model: MambaForCausalLM,
    input_ids: torch.Tensor,
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
) -> torch.Tensor:
    """Compute the logits of `model` for whole sequences with the chunked scan, for training.

    Uses the module's own parameters, so gradients land in the `MambaForCausalLM` and its
    `save_pretrained` checkpoints stay loadable as they are. Supports no padding mask, no cache and no
    initial state: every row is one unpadded sequence starting from the zero state.

    Args:
        model: any `MambaForCausalLM`.
        input_ids: (b, l) token ids.

    Returns:
        (b, l, v) float32 logits, equal to `model(input_ids).logits` up to rounding.
    """
    backbone = model.backbone
    hidden = backbone.embeddings(input_ids)  # (b, l, hidden)
    seq_len = input_ids.shape[1]

    for block in backbone.layers:
        residual = hidden.float() if block.residual_in_fp32 else hidden
        mixer = block.mixer
        projected = mixer.in_proj(block.norm(hidden))  # (b, l, 2d)
        x, gate = projected.chunk(2, dim=-1)  # (b, l, d) each

        x = F.silu(causal_depthwise_conv(x, mixer.conv1d.weight, mixer.conv1d.bias))  # (b, l, d)

        time_step, B, C = torch.split(
            mixer.x_proj(x), [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], dim=-1
        )  # (b, l, rank), (b, l, n), (b, l, n)
        dt = F.softplus(mixer.dt_proj(time_step).float())  # (b, l, d), dt_proj adds the bias
        A = -torch.exp(mixer.A_log.float())  # (d, n)

        y = selective_scan_chunked(x.float(), dt, A, B.float(), C.float(), mixer.D.float(), chunk_length)
        y = y * F.silu(gate.float())  # (b, l, d)
        hidden = residual + mixer.out_proj(y.to(projected.dtype))  # (b, l, hidden)

    hidden = backbone.norm_f(hidden)
    return model.lm_head(hidden.to(model.lm_head.weight.dtype)).float()  # (b, l, v)
