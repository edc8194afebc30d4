"""stqa.nn.SpatialAttention / TemporalAttention: shapes, masks, impl switching, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from stqa.nn import SpatialAttention, TemporalAttention


def test_spatial_attention_shapes_and_frame_mask():
    torch.manual_seed(0)
    module = SpatialAttention(feature_dim=12, query_dim=7, hidden_dim=8)
    features, query = torch.randn(2, 4, 7, 7, 12), torch.randn(2, 7)
    frame_mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    attended, weights = module(features, query, frame_mask)
    assert attended.shape == (2, 4, 12) and weights.shape == (2, 4, 49)
    assert torch.all(attended[0, 3] == 0) and torch.all(weights[1, 1:] == 0)
    torch.testing.assert_close(weights[frame_mask].sum(-1), torch.ones(4))
    flat = module(features.flatten(2, 3), query, frame_mask)
    torch.testing.assert_close(flat[0], attended)
    # attention is a convex combination of the frame's 49 cells
    manual = (weights[0, 0, :, None] * features[0, 0].reshape(49, 12)).sum(0)
    torch.testing.assert_close(attended[0, 0], manual)


def test_spatial_attention_matches_explicit_bahdanau_formula():
    torch.manual_seed(1)
    module = SpatialAttention(feature_dim=6, query_dim=5, hidden_dim=4, impl="fused")
    features, query = torch.randn(1, 2, 49, 6), torch.randn(1, 5)
    attended, weights = module(features, query)
    keys = features @ module.key_proj.weight.T + module.key_proj.bias
    q = query @ module.query_proj.weight.T + module.query_proj.bias
    scores = torch.tanh(keys + q[:, None, None, :]) @ module.score_weight
    torch.testing.assert_close(weights, torch.softmax(scores, -1))


@pytest.mark.parametrize("module_cls", [SpatialAttention, TemporalAttention])
def test_impl_switching_gives_same_outputs_and_gradients(module_cls):
    torch.manual_seed(2)
    module = module_cls(10, 6, hidden_dim=8).double()
    if module_cls is SpatialAttention:
        x = torch.randn(3, 5, 7, 7, 10, dtype=torch.float64)
        mask_kw = {"frame_mask": torch.rand(3, 5) > 0.3}
    else:
        x = torch.randn(3, 9, 10, dtype=torch.float64)
        mask_kw = {"lengths": torch.tensor([9, 4, 0])}
    query = torch.randn(3, 6, dtype=torch.float64)
    results = []
    for impl in ("fused", "reference"):
        module.impl = impl
        module.zero_grad()
        xi = x.clone().requires_grad_()
        out, weights = module(xi, query, **mask_kw)
        (out.pow(2).sum() + weights.sum()).backward()
        results.append([out, weights, xi.grad] + [p.grad.clone() for p in module.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="impl must be one of"):
        module.impl = "triton"


def test_temporal_attention_lengths_mask_and_padding():
    torch.manual_seed(3)
    module = TemporalAttention(memory_dim=5, query_dim=3, hidden_dim=4)
    memory, query = torch.randn(3, 6, 5), torch.randn(3, 3)
    context, weights = module(memory, query, lengths=torch.tensor([6, 3, 0]))
    assert context.shape == (3, 5) and weights.shape == (3, 6)
    assert torch.all(weights[1, 3:] == 0) and torch.all(context[2] == 0) and torch.all(weights[2] == 0)
    # padding content never matters
    padded = memory.clone()
    padded[1, 3:] = 1e4
    context2, _ = module(padded, query, lengths=torch.tensor([6, 3, 0]))
    torch.testing.assert_close(context2[1], context[1])
    mask = torch.tensor([[True, False, True, True, True, True]] * 3)
    _, weights_mask = module(memory, query, mask=mask)
    assert torch.all(weights_mask[:, 1] == 0)
    unmasked, _ = module(memory, query)
    assert torch.isfinite(unmasked).all()


def test_bf16_module_runs_fused():
    torch.manual_seed(4)
    module = SpatialAttention(16, 8, hidden_dim=8).to(torch.bfloat16)
    features, query = torch.randn(2, 3, 49, 16, dtype=torch.bfloat16), torch.randn(2, 8, dtype=torch.bfloat16)
    out, weights = module(features, query)
    module.impl = "reference"
    ref_out, ref_weights = module(features, query)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref_out, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(weights, ref_weights, atol=2e-2, rtol=2e-2)


def test_module_input_errors():
    spatial = SpatialAttention(8, 4, hidden_dim=4)
    with pytest.raises(ValueError, match="features must be"):
        spatial(torch.randn(2, 3, 49, 9), torch.randn(2, 4))
    with pytest.raises(ValueError, match="query must be"):
        spatial(torch.randn(2, 3, 49, 8), torch.randn(3, 4))
    with pytest.raises(ValueError, match="frame_mask must be"):
        spatial(torch.randn(2, 3, 49, 8), torch.randn(2, 4), torch.ones(2, 4, dtype=torch.bool))
    temporal = TemporalAttention(8, 4, hidden_dim=4)
    with pytest.raises(ValueError, match="memory must be"):
        temporal(torch.randn(2, 3, 7), torch.randn(2, 4))
    with pytest.raises(ValueError, match="lengths must be"):
        temporal(torch.randn(2, 3, 8), torch.randn(2, 4), lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
        TemporalAttention(8, 4, hidden_dim=0)


def test_modules_under_autocast_pool_in_the_wider_dtype():
    torch.manual_seed(5)
    spatial = SpatialAttention(16, 8, hidden_dim=8)
    features, query = torch.randn(2, 3, 49, 16), torch.randn(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, weights = spatial(features, query)
    assert out.dtype == torch.float32 and weights.dtype == torch.float32
    torch.testing.assert_close(out, spatial(features, query)[0], atol=5e-2, rtol=5e-2)
    temporal = TemporalAttention(16, 8, hidden_dim=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        context, _ = temporal(features[:, 0], query, lengths=torch.tensor([49, 10]))
    assert context.dtype == torch.float32
