"""The chunked selective scan against the sequential recurrence and against the `transformers` Mamba."""

import pytest
import torch
import torch.nn.functional as F
from transformers import MambaConfig, MambaForCausalLM

from mambaviz.scan import (
    causal_depthwise_conv,
    mamba_training_forward,
    selective_scan_chunked,
    selective_scan_sequential,
)


def random_scan_inputs(batch_size=2, seq_len=50, channels=6, state_size=4, dt_scale=1.0, seed=0):
    """Build scan inputs in the ranges a trained Mamba layer produces: dt > 0, A < 0."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, seq_len, channels, generator=generator)
    dt = F.softplus(torch.randn(batch_size, seq_len, channels, generator=generator)) * dt_scale
    A = -torch.exp(torch.randn(channels, state_size, generator=generator))
    B = torch.randn(batch_size, seq_len, state_size, generator=generator)
    C = torch.randn(batch_size, seq_len, state_size, generator=generator)
    D = torch.randn(channels, generator=generator)
    return x, dt, A, B, C, D


@pytest.mark.parametrize("chunk_length", [1, 7, 16, 50, 64])
def test_chunked_scan_equals_sequential_values(chunk_length):
    inputs = random_scan_inputs()

    expected = selective_scan_sequential(*inputs)
    actual = selective_scan_chunked(*inputs, chunk_length=chunk_length)

    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_chunked_scan_equals_sequential_gradients():
    leaves = [t.clone().requires_grad_(True) for t in random_scan_inputs()]
    reference_leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    output_weights = torch.randn(2, 50, 6, generator=torch.Generator().manual_seed(1))

    (selective_scan_chunked(*leaves, chunk_length=16) * output_weights).sum().backward()
    (selective_scan_sequential(*reference_leaves) * output_weights).sum().backward()

    for name, leaf, reference in zip(("x", "dt", "A", "B", "C", "D"), leaves, reference_leaves):
        torch.testing.assert_close(leaf.grad, reference.grad, atol=1e-4, rtol=1e-5, msg=f"gradient of {name} differs")


def test_chunked_scan_large_steps_stay_finite():
    # Sums of dt * A of about -2000 per chunk would overflow any formula that divides by the decay.
    inputs = random_scan_inputs(dt_scale=50.0)

    actual = selective_scan_chunked(*inputs, chunk_length=32)

    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, selective_scan_sequential(*inputs), atol=1e-5, rtol=1e-5)


def test_chunked_scan_rejects_zero_chunk_length():
    with pytest.raises(ValueError, match="chunk_length"):
        selective_scan_chunked(*random_scan_inputs(), chunk_length=0)


def test_causal_depthwise_conv_equals_conv1d():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, kernel_size=4, groups=6, padding=3)
    x = torch.randn(2, 11, 6)

    expected = conv(x.transpose(1, 2))[..., :11].transpose(1, 2)
    actual = causal_depthwise_conv(x, conv.weight, conv.bias)

    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-6)


def tiny_mamba(seed=0):
    torch.manual_seed(seed)
    config = MambaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, conv_kernel=4)
    return MambaForCausalLM(config).float()


def test_training_forward_equals_hf_logits():
    model = tiny_mamba().eval()
    input_ids = torch.randint(0, 97, (2, 45), generator=torch.Generator().manual_seed(2))

    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
        actual = mamba_training_forward(model, input_ids, chunk_length=16)

    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_training_forward_equals_hf_gradients():
    model = tiny_mamba()
    reference = tiny_mamba()
    reference.load_state_dict(model.state_dict())
    input_ids = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(3))
    labels = input_ids[:, 1:].flatten()

    F.cross_entropy(mamba_training_forward(model, input_ids)[:, :-1].flatten(0, 1), labels).backward()
    F.cross_entropy(reference(input_ids=input_ids).logits[:, :-1].flatten(0, 1), labels).backward()

    for (name, parameter), (_, reference_parameter) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(parameter.grad, reference_parameter.grad, atol=1e-4, rtol=1e-4, msg=f"gradient of {name} differs")


def test_training_forward_learns_repeated_sequence():
    model = tiny_mamba()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    input_ids = torch.arange(40).remainder(7).unsqueeze(0).repeat(2, 1)  # (2, 40) period-7 pattern

    losses = []
    for _ in range(30):
        logits = mamba_training_forward(model, input_ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), input_ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    assert losses[-1] < 0.5 * losses[0]
