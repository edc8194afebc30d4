"""The fused attention-pooling op (torch.ops.stqa.attention_pool) against the reference: on the CPU, and
the tests parametrized with cpu_and_cuda() on a GPU too (GPU-only checks: test_ops_cuda.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from op_helpers import cpu_and_cuda, make_inputs, rel_err, scale_for

import stqa
from stqa.ops import attention_pool, reference, spatial_attention, temporal_attention

SCORES = ["additive", "dot", "cosine"]


def run_both(inputs, score, impl_dtype=None):
    """Forward + backward with random output gradients; returns ([outputs], [grads]) for fused and reference."""
    values, keys, query, weight, mask = inputs
    scale = scale_for(score)
    results = []
    g = torch.Generator().manual_seed(123)
    grad_out = None
    for impl in ("fused", "reference"):
        ins = [t.detach().clone().requires_grad_() if t is not None else None for t in (values, keys, query, weight)]
        if impl == "reference" and impl_dtype is not None:
            ins = [t.detach().to(impl_dtype).requires_grad_() if t is not None else None for t in ins]
        pooled, weights = attention_pool(*ins, mask=mask, score=score, scale=scale, impl=impl)
        if grad_out is None:
            grad_out = (
                torch.randn(pooled.shape, generator=g, dtype=torch.float64),
                torch.randn(weights.shape, generator=g, dtype=torch.float64),
            )
        loss = (pooled * grad_out[0].to(pooled)).sum() + (weights * grad_out[1].to(weights)).sum()
        loss.backward()
        results.append(([pooled, weights], [t.grad for t in ins if t is not None]))
    return results


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("mask", [None, "random", "holes"])
def test_gradcheck_fp64(device, score, mask):
    values, keys, query, weight, m = make_inputs(2, 3, 5, 4, 3, score, dtype=torch.float64, mask=mask,
                                                 device=device)
    tensors = [t.requires_grad_() for t in (values, keys, query, weight) if t is not None]

    def fn(*ts):
        w = ts[3] if score == "additive" else None
        return attention_pool(ts[0], ts[1], ts[2], w, m, score=score, scale=scale_for(score))

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


SHAPES = [(2, 3, 49, 40, 17), (1, 1, 35, 33, 64), (3, 2, 7, 129, 5), (2, 5, 1, 8, 8)]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("score", SCORES)
def test_parity_fp32_and_fp64(device, shape, score):
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        inputs = make_inputs(*shape, score, dtype=dtype, mask="holes", seed=sum(shape), device=device)
        (f_out, f_grads), (r_out, r_grads) = run_both(inputs, score, impl_dtype=torch.float64)
        for name, a, b in zip(["pooled", "weights"], f_out, r_out, strict=True):
            assert a.dtype == dtype
            assert rel_err(a, b) <= tol, (name, dtype, rel_err(a, b))
        for i, (a, b) in enumerate(zip(f_grads, r_grads, strict=True)):
            assert a.dtype == dtype
            assert rel_err(a, b) <= tol, ("grad", i, dtype, rel_err(a, b))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("score", SCORES)
def test_parity_bf16(device, score):
    inputs = make_inputs(2, 3, 49, 64, 32, score, dtype=torch.bfloat16, mask="holes", seed=7, device=device)
    (f_out, f_grads), (r_out, r_grads) = run_both(inputs, score, impl_dtype=torch.float64)
    for a, b in zip(f_out + f_grads, r_out + r_grads, strict=True):
        assert a.dtype == torch.bfloat16
        assert rel_err(a, b) <= 1e-2


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_fully_masked_rows_are_zero_with_zero_gradients(device):
    values, keys, query, weight, mask = make_inputs(2, 3, 6, 5, 4, "additive", mask="holes", device=device)
    mask[1] = False  # the whole second batch item: its query gets no gradient at all
    ins = [t.requires_grad_() for t in (values, keys, query, weight)]
    pooled, weights = attention_pool(*ins, mask=mask)
    assert torch.all(pooled[0, 0] == 0) and torch.all(weights[0, 0] == 0)
    assert torch.all(pooled[1] == 0) and torch.all(weights[1] == 0)
    (pooled.sum() + weights.sum()).backward()
    for t in ins:
        assert torch.isfinite(t.grad).all()
    assert torch.all(values.grad[0, 0] == 0) and torch.all(keys.grad[1] == 0) and torch.all(query.grad[1] == 0)
    assert torch.all(values.grad[:, :, :][~mask] == 0)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_weights_sum_to_one_and_large_scores_stay_finite(device):
    values, keys, query, _, mask = make_inputs(2, 2, 49, 8, 16, "dot", mask="random", device=device)
    pooled, weights = attention_pool(values, keys * 1e3, query, mask=mask, score="dot", scale=10.0)
    assert torch.isfinite(pooled).all() and torch.isfinite(weights).all()
    valid_rows = mask.any(-1)
    torch.testing.assert_close(weights.sum(-1)[valid_rows], torch.ones(int(valid_rows.sum()), device=device))
    assert torch.all(weights[~mask] == 0)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("wanted", [(True, False, False, False), (False, True, False, False),
                                    (False, False, True, True), (True, True, False, True)])
def test_only_requested_gradients(device, wanted):
    values, keys, query, weight, mask = make_inputs(2, 3, 9, 6, 5, "additive", dtype=torch.float64, device=device)
    ins = [t.detach().clone().requires_grad_(w) for t, w in zip((values, keys, query, weight), wanted, strict=True)]
    refs = [t.detach().clone().requires_grad_(w) for t, w in zip((values, keys, query, weight), wanted, strict=True)]
    p, a = attention_pool(*ins, mask=mask)
    (p.sum() + (a * a).sum()).backward()
    p, a = reference.attention_pool(*refs, mask=mask)
    (p.sum() + (a * a).sum()).backward()
    for t, r, w in zip(ins, refs, wanted, strict=True):
        if w:
            torch.testing.assert_close(t.grad, r.grad)
        else:
            assert t.grad is None


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_backward_op_returns_empty_tensors_for_unrequested_gradients(device):
    values, keys, query, weight, mask = make_inputs(2, 2, 4, 3, 5, "additive", device=device)
    gp, ga = torch.randn(2, 2, 3, device=device), torch.randn(2, 2, 4, device=device)
    dv, dk, dq, dw = torch.ops.stqa.attention_pool_backward(
        gp, ga, values, keys, query, weight, mask, "additive", 1.0, [False, True, False, True]
    )
    assert dv.numel() == 0 and dq.numel() == 0
    assert dk.shape == keys.shape and dw.shape == weight.shape


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_non_contiguous_inputs(device):
    B, R, L, C, K = 2, 3, 7, 6, 5
    values, keys, query, weight, mask = make_inputs(B, R, L, C, K, "additive", device=device)
    values_nc = values.transpose(0, 1).contiguous().transpose(0, 1)  # same values, permuted strides
    keys_nc = torch.cat([keys, keys], dim=-1)[..., ::2]  # strided last dim (a copy of every other column)
    keys_nc.copy_(keys)
    query_nc = query.t().contiguous().t()
    weight_nc = torch.stack([weight, weight], 1)[:, 0]
    mask_nc = mask.transpose(1, 2).contiguous().transpose(1, 2)
    for t in (values_nc, keys_nc, query_nc, weight_nc, mask_nc):
        assert not t.is_contiguous()
    got = attention_pool(values_nc, keys_nc, query_nc, weight_nc, mask_nc)
    want = reference.attention_pool(values, keys, query, weight, mask)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # the raw op (no Python wrapper) accepts non-contiguous inputs too
    raw = torch.ops.stqa.attention_pool(values_nc, keys_nc, query_nc, weight_nc, mask_nc, "additive", 1.0)
    for a, b in zip(raw, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_empty_batch(device):
    values, keys, query, weight, _ = make_inputs(0, 3, 4, 5, 6, "additive", mask=None, device=device)
    ins = [t.requires_grad_() for t in (values, keys, query, weight)]
    pooled, weights = attention_pool(*ins)
    assert pooled.shape == (0, 3, 5) and weights.shape == (0, 3, 4)
    pooled.sum().backward()
    assert torch.all(ins[3].grad == 0)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_double_backward_raises(device):
    values, keys, query, weight, mask = make_inputs(1, 2, 4, 3, 5, "additive", dtype=torch.float64, device=device)
    ins = [t.requires_grad_() for t in (values, keys, query, weight)]
    pooled, _ = attention_pool(*ins, mask=mask)
    grads = torch.autograd.grad(pooled.pow(2).sum(), ins, create_graph=True)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad(grads[1].sum(), ins)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("score", SCORES)
def test_opcheck(device, score):
    values, keys, query, weight, mask = make_inputs(2, 2, 5, 4, 3, score, mask="holes", device=device)
    ins = [t.requires_grad_() if t is not None else None for t in (values, keys, query, weight)]
    torch.library.opcheck(torch.ops.stqa.attention_pool.default, (*ins, mask, score, scale_for(score)))
    gp, ga = torch.randn(2, 2, 4, device=device), torch.randn(2, 2, 5, device=device)
    plain = [t.detach() if t is not None else None for t in ins]
    torch.library.opcheck(
        torch.ops.stqa.attention_pool_backward.default,
        (gp, ga, *plain, mask, score, scale_for(score), [True, True, True, score == "additive"]),
    )


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    module = stqa.nn.SpatialAttention(feature_dim=8, query_dim=6, hidden_dim=4)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    features, query = torch.randn(2, 3, 7, 7, 8), torch.randn(2, 6)
    frame_mask = torch.tensor([[True, True, False], [True, False, False]])
    out, weights = compiled(features, query, frame_mask)
    ref_out, ref_weights = module(features, query, frame_mask)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)
    out.sum().backward()
    assert module.score_weight.grad is not None and torch.isfinite(module.score_weight.grad).all()


def test_torch_compile_inductor():
    torch._dynamo.reset()

    def fn(values, keys, query, weight, mask):
        pooled, weights = attention_pool(values, keys, query, weight, mask)
        return torch.relu(pooled) * 2, weights

    values, keys, query, weight, mask = make_inputs(2, 2, 5, 4, 3, "additive", mask="holes")
    compiled = torch.compile(fn, fullgraph=True)
    got = compiled(values, keys, query, weight, mask)
    want = fn(values, keys, query, weight, mask)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


ERROR_CASES = [
    (lambda v, k, q, w, m: (v[0], k, q, w, m, "additive"), ValueError, "values must be"),
    (lambda v, k, q, w, m: (v, k[..., 0], q, w, m, "additive"), ValueError, "keys must be"),
    (lambda v, k, q, w, m: (v, k[:, :1], q, w, m, "additive"), ValueError, "keys must be"),
    (lambda v, k, q, w, m: (v, k, q[:, :2], w, m, "additive"), ValueError, "query must be"),
    (lambda v, k, q, w, m: (v, k, q[0], w, m, "additive"), ValueError, "query must be"),
    (lambda v, k, q, w, m: (v, k.double(), q, w, m, "additive"), ValueError, "dtype mismatch.*keys"),
    (lambda v, k, q, w, m: (v, k, q, w.double(), m, "additive"), ValueError, "dtype mismatch.*weight"),
    (lambda v, k, q, w, m: (v.long(), k, q, w, m, "additive"), ValueError, "values must be a floating"),
    (lambda v, k, q, w, m: (v, k, q, w, m.float(), "additive"), ValueError, "mask must be a bool"),
    (lambda v, k, q, w, m: (v, k, q, w, m[:, :, :2], "additive"), ValueError, "mask must be"),
    (lambda v, k, q, w, m: (v, k, q, w, m, "bilinear"), ValueError, "score must be one of"),
    (lambda v, k, q, w, m: (v, k, q, None, m, "additive"), ValueError, "needs weight"),
    (lambda v, k, q, w, m: (v, k, q, w, m, "dot"), ValueError, "weight is only used"),
    (lambda v, k, q, w, m: (v, k, q, w[:2], m, "additive"), ValueError, "weight must be"),
    (lambda v, k, q, w, m: (v, k, q, w, m.to("meta"), "additive"), ValueError, "device mismatch.*mask"),
    (lambda v, k, q, w, m: (v, k, q.to("meta"), w, m, "additive"), ValueError, "device mismatch.*query"),
    (lambda v, k, q, w, m: (v.cpu().numpy(), k, q, w, m, "additive"), TypeError, "values must be a torch.Tensor"),
]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("case", range(len(ERROR_CASES)))
def test_bad_input_errors_name_the_argument(device, case):
    build, exc, pattern = ERROR_CASES[case]
    values, keys, query, weight, mask = make_inputs(2, 3, 4, 5, 6, "additive", device=device)
    v, k, q, w, m, score = build(values, keys, query, weight, mask)
    for impl in ("fused", "reference"):
        with pytest.raises(exc, match=pattern):
            attention_pool(v, k, q, w, m, score=score, impl=impl)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_bad_scale_and_impl(device):
    values, keys, query, weight, mask = make_inputs(1, 1, 3, 2, 2, "additive", device=device)
    with pytest.raises(ValueError, match="scale only applies"):
        attention_pool(values, keys, query, weight, mask, scale=2.0)
    with pytest.raises(ValueError, match="scale must be a finite"):
        attention_pool(values, keys, query, None, mask, score="dot", scale=float("nan"))
    with pytest.raises(ValueError, match="impl must be one of"):
        attention_pool(values, keys, query, weight, mask, impl="cuda")


def test_raw_op_checks_inputs_too():
    values, keys, query, weight, mask = make_inputs(2, 3, 4, 5, 6, "additive")
    with pytest.raises(ValueError, match="query must be"):
        torch.ops.stqa.attention_pool(values, keys, query[:1], weight, mask, "additive", 1.0)
    with pytest.raises(ValueError, match="score must be one of"):
        torch.ops.stqa.attention_pool(values, keys, query, weight, mask, "nope", 1.0)
    with pytest.raises(ValueError, match="float32, float64 and bfloat16"):
        torch.ops.stqa.attention_pool(values.half(), keys.half(), query.half(), weight.half(), mask, "additive", 1.0)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_spatial_wrapper_accepts_grid_and_flat_layouts(device):
    B, T, C, K = 2, 3, 6, 4
    features = torch.randn(B, T, 7, 7, C, device=device)
    keys = torch.randn(B, T, 7, 7, K, device=device)
    query, weight = torch.randn(B, K, device=device), torch.randn(K, device=device)
    frame_mask = torch.tensor([[True, False, True], [False, False, False]], device=device)
    grid = spatial_attention(features, keys, query, weight, frame_mask)
    flat = spatial_attention(features.flatten(2, 3), keys.flatten(2, 3), query, weight, frame_mask)
    for a, b in zip(grid, flat, strict=True):
        torch.testing.assert_close(a, b)
    attended, weights = grid
    assert attended.shape == (B, T, C) and weights.shape == (B, T, 49)
    assert torch.all(attended[0, 1] == 0) and torch.all(attended[1] == 0)
    with pytest.raises(ValueError, match="frame_mask must be"):
        spatial_attention(features, keys, query, weight, frame_mask[:, :2])
    with pytest.raises(ValueError, match="keys must have the grid"):
        spatial_attention(features, keys[:, :, :6], query, weight)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_temporal_wrapper_lengths_and_mask(device):
    B, T, D, K = 3, 6, 5, 4
    memory, keys = torch.randn(B, T, D, device=device), torch.randn(B, T, K, device=device)
    query, weight = torch.randn(B, K, device=device), torch.randn(K, device=device)
    lengths = torch.tensor([6, 2, 0], device=device)
    context, weights = temporal_attention(memory, keys, query, weight, lengths=lengths)
    assert context.shape == (B, D) and weights.shape == (B, T)
    assert torch.all(weights[1, 2:] == 0) and torch.all(context[2] == 0)
    mask = torch.arange(T, device=device) < lengths[:, None]
    by_mask = temporal_attention(memory, keys, query, weight, mask=mask)
    torch.testing.assert_close(by_mask[0], context)
    all_valid = torch.ones(B, T, dtype=torch.bool, device=device)
    both = temporal_attention(memory, keys, query, weight, mask=all_valid, lengths=lengths)
    torch.testing.assert_close(both[1], weights)
    with pytest.raises(ValueError, match="lengths must lie in"):
        temporal_attention(memory, keys, query, weight, lengths=torch.tensor([7, 1, 1], device=device))
    with pytest.raises(ValueError, match="lengths must have an integer dtype"):
        temporal_attention(memory, keys, query, weight, lengths=torch.tensor([1.0, 1.0, 1.0], device=device))


def test_build_info_reports_openmp_and_cpu_isa():
    info = stqa.build_info()
    assert info["openmp"] is True
    assert info["cpu_capability"] in ("generic", "avx2", "avx512")


_ISA_SCRIPT = textwrap.dedent(
    """
    import torch, stqa
    from stqa.ops import attention_pool
    assert stqa.build_info()["cpu_capability"] == {isa!r}
    torch.manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        for score in ("additive", "dot", "cosine"):
            v, k = torch.randn(2, 3, 11, 37), torch.randn(2, 3, 11, 19)
            q, w = torch.randn(2, 19), torch.randn(19) if score == "additive" else None
            m = torch.rand(2, 3, 11) > 0.3
            m[0, 0] = False
            outs = []
            for impl, dt in (("fused", dtype), ("reference", torch.float64)):
                ins = [t.detach().to(dt).requires_grad_() if t is not None else None for t in (v, k, q, w)]
                p, a = attention_pool(*ins, mask=m, score=score, scale=1.0, impl=impl)
                (p.double().pow(2).sum() + a.double().sin().sum()).backward()
                outs.append([p, a] + [t.grad for t in ins if t is not None])
            for x, y in zip(*outs):
                err = ((x.double() - y).abs().max() / y.abs().max()).item()
                assert err <= tol, (dtype, score, err)
    print("ok")
    """
)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_every_cpu_isa_variant_matches_reference(isa):
    # the default run covers the best variant (avx512 here); the others run in a subprocess
    env = dict(os.environ, STQA_CPU_CAPABILITY=isa)
    result = subprocess.run(
        [sys.executable, "-c", _ISA_SCRIPT.format(isa=isa)], env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0 and "is not supported by this CPU" in result.stderr:
        pytest.skip(f"{isa} kernels are not supported by this CPU")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("score", SCORES)
def test_nan_inputs_propagate_instead_of_vanishing(score):
    values, keys, query, weight, _ = make_inputs(2, 2, 5, 4, 3, score, mask=None)
    keys[0, 1, 2, 0] = float("nan")
    pooled, weights = attention_pool(values, keys, query, weight, None, score=score, scale=scale_for(score))
    assert torch.isnan(weights[0, 1]).all() and torch.isnan(pooled[0, 1]).all()
    others = torch.ones(2, 2, dtype=torch.bool)
    others[0, 1] = False
    assert torch.isfinite(weights[others]).all() and torch.isfinite(pooled[others]).all()


# --- Paths the CPU and CUDA kernels share, on every device present --------------------------------------


def _grads_both(inputs, score, wanted, use, device):
    """Fused vs fp64 reference: outputs and the gradients of the inputs flagged in `wanted`, with the loss
    built from the outputs named in `use` ("pooled", "weights" or both)."""
    values, keys, query, weight, mask = inputs
    results = []
    for impl in ("fused", "reference"):
        dtype = None if impl == "fused" else torch.float64
        ins = [None if t is None else t.detach().to(dtype or t.dtype).requires_grad_(w)
               for t, w in zip((values, keys, query, weight), wanted, strict=True)]
        pooled, weights = attention_pool(*ins, mask=mask, score=score, scale=scale_for(score), impl=impl)
        g = torch.Generator().manual_seed(3)
        loss = 0
        if "pooled" in use:
            loss = loss + (pooled.double() * torch.randn(pooled.shape, generator=g, dtype=torch.float64).to(device)).sum()
        if "weights" in use:
            loss = loss + (weights.double() * torch.randn(weights.shape, generator=g, dtype=torch.float64).to(device)).sum()
        if torch.is_tensor(loss) and loss.requires_grad:  # the reference's weights do not depend on values
            loss.backward()
        grads = [None if t is None or not t.requires_grad else (t.grad if t.grad is not None else torch.zeros_like(t))
                 for t in ins]
        results.append(([pooled, weights], grads))
    return results


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("score", SCORES)
def test_gradcheck_fp64_vector_path(device, score):
    # C and K even: the CUDA kernels take their 16-byte (2 x fp64) path; gradcheck above uses K = 3 (scalar)
    values, keys, query, weight, m = make_inputs(2, 3, 5, 4, 6, score, dtype=torch.float64, device=device)
    tensors = [t.requires_grad_() for t in (values, keys, query, weight) if t is not None]

    def fn(*ts):
        w = ts[3] if score == "additive" else None
        return attention_pool(ts[0], ts[1], ts[2], w, m, score=score, scale=scale_for(score))

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("wanted", [(True, False, False, False), (False, True, False, False),
                                    (False, False, True, False), (False, False, False, True),
                                    (False, True, True, True), (True, False, True, False)])
@pytest.mark.parametrize("use", [("pooled",), ("weights",), ("pooled", "weights")])
def test_partial_gradient_requests(device, wanted, use):
    inputs = make_inputs(2, 3, 9, 16, 8, "additive", dtype=torch.float32, mask="holes", device=device)
    (f_out, f_grads), (r_out, r_grads) = _grads_both(inputs, "additive", wanted, use, device)
    for a, b, w in zip(f_grads, r_grads, wanted, strict=True):
        if not w:
            assert a is None
        else:
            assert rel_err(a, b) <= 1e-5
    if wanted[0] and use == ("weights",):
        assert torch.all(f_grads[0] == 0)  # pooled unused: values get exact zeros


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("L,dtype", [(1500, torch.float32), (4000, torch.float32), (2000, torch.float64)])
@pytest.mark.parametrize("score", ["additive", "cosine"])
def test_rows_longer_than_the_old_cuda_cap(device, L, dtype, score):
    # the CUDA kernel capped L at 1024; now its limit comes from shared memory (4000 fp32 and 2000 fp64
    # need more than the default 48 KiB); the CPU kernel has no limit
    inputs = make_inputs(1, 3, L, 8, 8, score, dtype=dtype, mask="holes", device=device)
    (f_out, f_grads), (r_out, r_grads) = _grads_both(inputs, score, (True, True, True, True), ("pooled", "weights"),
                                                     device)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for a, b in zip(f_out + [t for t in f_grads if t is not None], r_out + [t for t in r_grads if t is not None],
                    strict=True):
        assert rel_err(a, b) <= tol


ZERO_SHAPES = [(0, 3, 4, 5, 6), (2, 0, 4, 5, 6), (2, 3, 0, 5, 6), (2, 3, 4, 0, 6), (2, 3, 4, 5, 0)]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("shape", ZERO_SHAPES, ids=["B0", "R0", "L0", "C0", "K0"])
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("mask", [None, "random"])
def test_zero_size_dimensions(device, shape, score, mask):
    inputs = make_inputs(*shape, score, dtype=torch.float64, mask=mask, device=device)
    (f_out, f_grads), (r_out, r_grads) = _grads_both(inputs, score, (True, True, True, True), ("pooled", "weights"),
                                                     device)
    B, R, L, C, K = shape
    assert f_out[0].shape == (B, R, C) and f_out[1].shape == (B, R, L)
    for a, b in zip(f_out + [t for t in f_grads if t is not None], r_out + [t for t in r_grads if t is not None],
                    strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b.to(a.dtype), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("score", SCORES)
def test_backward_with_misaligned_and_non_contiguous_inputs(device, score):
    B, R, L, C, K = 2, 3, 7, 16, 8
    values, keys, query, weight, mask = make_inputs(B, R, L, C, K, score, mask="holes", device=device)
    g = torch.Generator().manual_seed(11)
    grad_pooled = torch.randn(B, R, C, generator=g).to(device)
    grad_weights = torch.randn(B, R, L, generator=g).to(device)

    def misaligned(t):  # same values at a storage offset of one element: not 16-byte aligned
        return torch.empty(t.numel() + 1, dtype=t.dtype, device=device)[1:].view_as(t).copy_(t)

    odd = dict(
        grad_pooled=grad_pooled.transpose(0, 1).contiguous().transpose(0, 1),  # permuted strides
        grad_weights=grad_weights.repeat_interleave(2, -1)[..., ::2],  # every other element of a copy
        values=misaligned(values), keys=misaligned(keys), query=misaligned(query),
        weight=None if weight is None else misaligned(weight),
    )
    assert not odd["grad_pooled"].is_contiguous() and not odd["grad_weights"].is_contiguous()
    assert odd["values"].data_ptr() % 16 != 0
    want_mask = [True, True, True, weight is not None]
    plain = torch.ops.stqa.attention_pool_backward(grad_pooled, grad_weights, values, keys, query, weight, mask,
                                                   score, scale_for(score), want_mask)
    got = torch.ops.stqa.attention_pool_backward(odd["grad_pooled"], odd["grad_weights"], odd["values"], odd["keys"],
                                                 odd["query"], odd["weight"], mask, score, scale_for(score), want_mask)
    for a, b in zip(got, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # and through autograd, where sum() hands the backward a stride-0 (expanded) grad_pooled
    ins = [None if t is None else t.detach().clone().requires_grad_() for t in (values, keys, query, weight)]
    pooled, _ = attention_pool(*ins, mask=mask, score=score, scale=scale_for(score))
    pooled.sum().backward()
    refs = [None if t is None else t.detach().double().requires_grad_() for t in (values, keys, query, weight)]
    pooled_ref, _ = attention_pool(*refs, mask=mask, score=score, scale=scale_for(score), impl="reference")
    pooled_ref.sum().backward()
    for a, b in zip(ins, refs, strict=True):
        if a is not None:
            assert rel_err(a.grad, b.grad) <= 1e-5


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_autocast_rule_promotes_mixed_dtypes(device):
    low = torch.bfloat16 if device == "cpu" else torch.float16
    values, keys, query, weight, mask = make_inputs(2, 3, 7, 16, 8, "additive", device=device)
    keys_low = keys.to(low).requires_grad_()  # what a projection returns under autocast
    with torch.autocast(device, dtype=low):
        pooled, weights = attention_pool(values, keys_low, query, weight, mask)
        raw = torch.ops.stqa.attention_pool(values, keys_low, query, weight, mask, "additive", 1.0)
        ref, _ = attention_pool(values, keys_low, query, weight, mask, impl="reference")
    assert pooled.dtype == weights.dtype == raw[0].dtype == torch.float32
    assert ref.shape == pooled.shape
    want = attention_pool(values, keys_low.detach().float(), query, weight, mask)
    for a, b in zip((pooled, weights), want, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(raw[0], pooled, atol=0, rtol=0)
    pooled.sum().backward()
    assert keys_low.grad.dtype == low and torch.isfinite(keys_low.grad).all()
    # all inputs in the low dtype stay there (the rule only promotes)
    with torch.autocast(device, dtype=low):
        p, _ = attention_pool(values.to(low), keys_low.detach(), query.to(low), weight.to(low), mask)
    assert p.dtype == low
    # outside autocast, mixed dtypes are still refused
    with pytest.raises(ValueError, match="dtype mismatch"):
        attention_pool(values, keys_low, query, weight, mask)


def test_autocast_rule_under_torch_compile():
    torch._dynamo.reset()
    values, keys, query, weight, mask = make_inputs(2, 3, 7, 16, 8, "additive")

    def fn(values, keys, query, weight, mask):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return attention_pool(values, torch.nn.functional.linear(keys, torch.eye(8)), query, weight, mask)

    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(values, keys, query, weight, mask)
    want = fn(values, keys, query, weight, mask)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)
