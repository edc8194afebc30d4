"""Reference state_dict layouts of the motion backbones' published weights, and random weights in them."""

from __future__ import annotations

import torch

# --- the reference layouts, spelled out independently of the modules under test ------------------------


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def torchvision_r2plus1d_18_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``torchvision.models.video.r2plus1d_18().state_dict()`` (torchvision's
    models/video/resnet.py: R2Plus1dStem, BasicBlock with Conv2Plus1D, [2, 2, 2, 2], 400 classes)."""
    keys: dict[str, tuple[int, ...]] = {"stem.0.weight": (45, 3, 1, 7, 7), **_bn("stem.1", 45),
                                        "stem.3.weight": (64, 45, 3, 1, 1), **_bn("stem.4", 64)}
    # midplanes = (in * out * 27) // (in * 9 + 3 * out), per block, the same for both convs of a block
    mids = {(64, 64): 144, (64, 128): 230, (128, 128): 288, (128, 256): 460, (256, 256): 576,
            (256, 512): 921, (512, 512): 1152}
    cin = 64
    for layer, cout in enumerate((64, 128, 256, 512), start=1):
        for block in (0, 1):
            bin_ = cin if block == 0 else cout
            mid = mids[(bin_, cout)]
            p = f"layer{layer}.{block}"
            for conv, first_in in (("conv1", bin_), ("conv2", cout)):
                keys[f"{p}.{conv}.0.0.weight"] = (mid, first_in, 1, 3, 3)
                keys.update(_bn(f"{p}.{conv}.0.1", mid))
                keys[f"{p}.{conv}.0.3.weight"] = (cout, mid, 3, 1, 1)
                keys.update(_bn(f"{p}.{conv}.1", cout))
            if block == 0 and layer > 1:
                keys[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", cout))
        cin = cout
    keys["fc.weight"] = (400, 512)
    keys["fc.bias"] = (400,)
    return keys


def c3d_sports1m_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the Sports-1M ``c3d.pickle`` of DavideA/c3d-pytorch (its C3D_model.py)."""
    keys: dict[str, tuple[int, ...]] = {}
    for name, cin, cout in (("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
                            ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512),
                            ("conv5b", 512, 512)):
        keys[f"{name}.weight"] = (cout, cin, 3, 3, 3)
        keys[f"{name}.bias"] = (cout,)
    keys.update({"fc6.weight": (4096, 8192), "fc6.bias": (4096,), "fc7.weight": (4096, 4096),
                 "fc7.bias": (4096,), "fc8.weight": (487, 4096), "fc8.bias": (487,)})
    return keys


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values with the layout's names and shapes (positive variances, int64 batch counters)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.startswith("fc6") or key.startswith("fc7"):
            state[key] = torch.zeros(shape)  # big and dropped on load: values do not matter, time does
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state


LAYOUTS = {"r2plus1d_18": torchvision_r2plus1d_18_layout, "c3d": c3d_sports1m_layout}
CONV_ONLY = {"r2plus1d_18": lambda k: True, "c3d": lambda k: not k.startswith("fc")}
