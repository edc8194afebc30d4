"""Fake (meta) kernels and the autograd formula of ``torch.ops.stqa.attention_pool``.

The schemas and the CPU/CUDA kernels live in ``csrc/`` (``TORCH_LIBRARY(stqa)``); this module adds
what ``torch.compile`` and autograd need on top, through the public ``torch.library`` API:

* ``register_fake``: output shapes/dtypes without data (FakeTensor / meta tracing);
* ``register_autograd``: the backward of the forward op is the fused ``attention_pool_backward``
  op, which recomputes the scores from keys/query/weight instead of keeping ``[B, R, L, K]``
  temporaries; gradients nobody asked for are not computed (returned as empty tensors);
* the backward op itself is not differentiable: double backward raises a clear error.
"""

from __future__ import annotations

import torch

_FORWARD = "stqa::attention_pool"
_BACKWARD = "stqa::attention_pool_backward"


@torch.library.register_fake(_FORWARD)
def _attention_pool_fake(values, keys, query, weight, mask, score, scale):
    torch._check(values.dim() == 4, lambda: "values must be [B, R, L, C]")
    B, R, L, C = values.shape
    return values.new_empty((B, R, C)), values.new_empty((B, R, L))


@torch.library.register_fake(_BACKWARD)
def _attention_pool_backward_fake(
    grad_pooled, grad_weights, values, keys, query, weight, mask, score, scale, output_mask
):
    def grad_like(t, wanted):
        return t.new_empty(t.shape) if (wanted and t is not None) else values.new_empty((0,))

    return (
        grad_like(values, output_mask[0]),
        grad_like(keys, output_mask[1]),
        grad_like(query, output_mask[2]),
        grad_like(weight, output_mask[3]),
    )


def _setup_context(ctx, inputs, output):
    values, keys, query, weight, mask, score, scale = inputs
    ctx.save_for_backward(values, keys, query, weight, mask)
    ctx.score = score
    ctx.scale = scale


def _backward(ctx, grad_pooled, grad_weights):
    values, keys, query, weight, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    output_mask = [bool(need[0]), bool(need[1]), bool(need[2]), weight is not None and bool(need[3])]
    d_values, d_keys, d_query, d_weight = torch.ops.stqa.attention_pool_backward(
        grad_pooled, grad_weights, values, keys, query, weight, mask, ctx.score, ctx.scale, output_mask
    )
    return (
        d_values if output_mask[0] else None,
        d_keys if output_mask[1] else None,
        d_query if output_mask[2] else None,
        d_weight if output_mask[3] else None,
        None,
        None,
        None,
    )


def _setup_context_backward(ctx, inputs, output):
    pass


def _double_backward(ctx, *grads):
    raise RuntimeError(
        "stqa::attention_pool does not support double backward (its backward op "
        "stqa::attention_pool_backward is not differentiable); use impl='reference' for higher-order gradients"
    )


torch.library.register_autograd(_FORWARD, _backward, setup_context=_setup_context)
torch.library.register_autograd(_BACKWARD, _double_backward, setup_context=_setup_context_backward)
