"""The fused op on CUDA only: parity with the reference in fp16/bf16/fp32, opcheck, masks, vector/scalar
paths, device limits. Checks that hold on every device are in test_ops.py, parametrized with
cpu_and_cuda() (gradcheck among them).

Skipped without a GPU (this machine has none); benchmarks/gpu_run.sh runs it on one. On a GPU with an
extension built without CUDA kernels, conftest.py fails these tests instead.
"""

from __future__ import annotations

import pytest
import torch
from op_helpers import make_inputs as make_any_inputs
from op_helpers import needs_cuda, rel_err, scale_for

import stqa
from stqa.ops import attention_pool

pytestmark = needs_cuda()

SCORES = ["additive", "dot", "cosine"]


def make_inputs(B, R, L, C, K, score, dtype, mask="holes", seed=0):
    """op_helpers.make_inputs on the GPU, with holes by default."""
    return make_any_inputs(B, R, L, C, K, score, dtype=dtype, mask=mask, seed=seed, device="cuda")


def forward_backward(inputs, score, impl, dtype):
    values, keys, query, weight, mask = inputs
    ins = [t.detach().to(dtype).requires_grad_() if t is not None else None for t in (values, keys, query, weight)]
    pooled, weights = attention_pool(*ins, mask=mask, score=score, scale=scale_for(score), impl=impl)
    g = torch.Generator(device="cuda").manual_seed(5)
    gp = torch.randn(pooled.shape, generator=g, device="cuda", dtype=torch.float64)
    ga = torch.randn(weights.shape, generator=g, device="cuda", dtype=torch.float64)
    ((pooled.double() * gp).sum() + (weights.double() * ga).sum()).backward()
    return [pooled, weights] + [t.grad for t in ins if t is not None]


# C, K multiples of 8 take the 16-byte path; 37/19 and 4099/19 take the scalar fallback. Few rows
# with a wide C (the last three) split C across blocks in the forward kernel. make_inputs leaves a valid
# position in most rows (a single-row case with "holes" once compared all-zero outputs).
@pytest.mark.parametrize("shape", [(2, 3, 49, 64, 32), (1, 3, 35, 1024, 64), (3, 2, 7, 37, 19), (2, 2, 100, 8, 8),
                                   (1, 2, 49, 4160, 32), (1, 3, 9, 4099, 19)])
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 1e-2)])
def test_cuda_parity_with_reference(shape, score, dtype, tol):
    inputs = make_inputs(*shape, score, dtype)
    got = forward_backward(inputs, score, "fused", dtype)
    want = forward_backward(inputs, score, "reference", torch.float64)
    nonzero_rows = want[0].abs().amax(-1) > 0
    assert 2 * int(nonzero_rows.sum()) > nonzero_rows.numel(), "the comparison must see real outputs"
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and a.is_cuda
        assert rel_err(a, b) <= tol


@pytest.mark.parametrize("score", SCORES)
def test_cuda_opcheck(score):
    values, keys, query, weight, mask = make_inputs(2, 2, 5, 8, 8, score, torch.float32)
    ins = [t.requires_grad_() if t is not None else None for t in (values, keys, query, weight)]
    torch.library.opcheck(torch.ops.stqa.attention_pool.default, (*ins, mask, score, scale_for(score)))


def test_cuda_fully_masked_rows_and_unaligned_views():
    values, keys, query, weight, mask = make_inputs(2, 3, 49, 64, 32, "additive", torch.float32)
    mask[1] = False
    # a view whose storage offset breaks 16-byte alignment takes the scalar path and still agrees
    values_off = torch.empty(values.numel() + 1, device="cuda")[1:].view_as(values).copy_(values)
    got = attention_pool(values_off, keys, query, weight, mask)
    want = attention_pool(values.double(), keys.double(), query.double(), weight.double(), mask, impl="reference")
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) <= 1e-5
    assert torch.all(got[0][1] == 0) and torch.all(got[1][1] == 0)


def test_cuda_module_and_compile():
    module = stqa.nn.SpatialAttention(64, 16, hidden_dim=32).cuda()
    features, query = torch.randn(2, 5, 7, 7, 64, device="cuda"), torch.randn(2, 16, device="cuda")
    frame_mask = torch.rand(2, 5, device="cuda") > 0.3
    out, weights = module(features, query, frame_mask)
    module.impl = "reference"
    ref_out, ref_weights = module(features, query, frame_mask)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    module.impl = "fused"
    compiled = torch.compile(module, fullgraph=True)
    out_c, _ = compiled(features, query, frame_mask)
    torch.testing.assert_close(out_c, out, atol=1e-5, rtol=1e-4)


def test_cuda_device_mismatch_is_reported():
    values, keys, query, weight, mask = make_inputs(1, 1, 4, 8, 8, "additive", torch.float32)
    with pytest.raises(ValueError, match="device mismatch"):
        attention_pool(values, keys, query.cpu(), weight, mask)


def test_cuda_rows_beyond_the_shared_memory_limit_are_refused():
    props = torch.cuda.get_device_properties(0)
    smem = getattr(props, "shared_memory_per_block_optin", 227 * 1024)
    limit = (smem - 8) // 17  # fp32: 4 floats + 1 flag byte per position, 2 floats per row
    for L, ok in ((limit, True), (limit + 1, False)):
        values, keys, query, weight, _ = make_inputs(1, 1, L, 8, 8, "additive", torch.float32, mask=None)
        if ok:
            pooled, weights = attention_pool(values, keys, query, weight)
            torch.testing.assert_close(weights.sum(), torch.tensor(1.0, device="cuda"))
        else:
            with pytest.raises(ValueError, match=f"L = {L} positions exceed the CUDA kernel's limit of {limit}"):
                attention_pool(values, keys, query, weight)
    # the CPU kernel takes the same shape
    pooled, _ = attention_pool(values.cpu(), keys.cpu(), query.cpu(), weight.cpu())
    assert torch.isfinite(pooled).all()


def test_cuda_launch_errors_are_raised_not_swallowed():
    # B * R = 2^31 rows: one more block than the grid takes; the launcher refuses it before allocating
    # (zero-size C, K and L keep every tensor empty)
    B, R = 2**16, 2**15
    values = torch.empty(B, R, 0, 0, device="cuda")
    keys = torch.empty(B, R, 0, 0, device="cuda")
    query = torch.empty(B, 0, device="cuda")
    with pytest.raises(ValueError, match="rows exceed the CUDA kernel's limit"):
        torch.ops.stqa.attention_pool(values, keys, query, None, None, "dot", 1.0)
