"""The pure-PyTorch reference: semantics checked against a direct per-row computation."""

from __future__ import annotations

import pytest
import torch

from stqa.ops import reference


def _inputs(B=2, R=3, L=5, C=4, K=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(B, R, L, C, dtype=dtype, generator=g)
    keys = torch.randn(B, R, L, K, dtype=dtype, generator=g)
    query = torch.randn(B, K, dtype=dtype, generator=g)
    weight = torch.randn(K, dtype=dtype, generator=g)
    mask = torch.rand(B, R, L, generator=g) > 0.3
    mask[0, 1] = False  # one fully masked row
    mask[1, 0, 2] = True
    return values, keys, query, weight, mask


@pytest.mark.parametrize("score", ["additive", "dot", "cosine"])
def test_reference_matches_per_row_loop(score):
    values, keys, query, weight, mask = _inputs()
    scale = 1.0 if score == "additive" else 0.7
    w_arg = weight if score == "additive" else None
    pooled, weights = reference.attention_pool(values, keys, query, w_arg, mask, score, scale)
    B, R, L, C = values.shape
    for b in range(B):
        for r in range(R):
            valid = mask[b, r]
            k, q = keys[b, r], query[b]
            if score == "additive":
                s = torch.tanh(k + q) @ weight
            elif score == "dot":
                s = scale * (k @ q)
            else:
                s = scale * torch.nn.functional.cosine_similarity(k, q[None].expand_as(k), dim=-1, eps=1e-8)
            if valid.any():
                a = torch.zeros(L, dtype=values.dtype)
                a[valid] = torch.softmax(s[valid], 0)
            else:
                a = torch.zeros(L, dtype=values.dtype)
            torch.testing.assert_close(weights[b, r], a)
            torch.testing.assert_close(pooled[b, r], a @ values[b, r])


def test_reference_fully_masked_rows_have_zero_outputs_and_finite_gradients():
    values, keys, query, weight, _ = _inputs()
    mask = torch.zeros(values.shape[:3], dtype=torch.bool)
    mask[1, 2, :2] = True
    tensors = [t.requires_grad_() for t in (values, keys, query, weight)]
    pooled, weights = reference.attention_pool(*tensors, mask)
    assert torch.all(pooled[0] == 0) and torch.all(weights[0] == 0)
    (pooled.sum() + (weights * torch.randn_like(weights)).sum()).backward()
    for t in tensors:
        assert torch.isfinite(t.grad).all()
    assert torch.all(values.grad[0] == 0) and torch.all(keys.grad[0] == 0)
