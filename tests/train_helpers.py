"""A small TGIF-format feature benchmark and ``stqa train`` argument building, for the training tests.

The benchmark's answers are written into HDF5 features (a count flag per frame, a colour channel, an
action channel), so a model must read the video to beat the text-only baseline while a run takes seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stqa.data.features import FeatureSpec, FeatureWriter

C = 12
T = 6
COLORS = ("red", "green", "blue")
ACTIONS = ("jump", "spin", "wave", "clap", "nod")


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(x) for x in r) for r in rows]
    path.write_text("\r\n".join(lines) + "\r\n")


def write_feature_benchmark(root: Path, n_train: int = 60, n_test: int = 30, seed: int = 0) -> tuple[Path, Path]:
    """TGIF-QA files (count, action, frameqa) + a feature store where the answers live in the features.

    count: y in {0, 2, 3, 4, 5}; max(y, 1) frames carry a flag in channel 0 at a random cell.
    frameqa: colour answer = the channel 1..3 raised over the whole of every frame.
    action: the right action's channel 4..8 is lit at one cell; candidates are the 5 actions, permuted.
    Question texts are constant per task, so a blind model stays at chance (count: the mean).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    spec = FeatureSpec(backbone="unit", channels=C, num_frames=T, policy="uniform", image_size=32)
    rows = {s: {"count": [], "action": [], "frameqa": []} for s in ("Train", "Test")}
    feats_path = root / "feats.h5"
    with FeatureWriter(feats_path, spec, weights_hash=None) as writer:
        for key in range(1, n_train + n_test + 1):
            split = "Train" if key <= n_train else "Test"
            t = int(rng.integers(5, T + 1))
            x = 0.1 * rng.standard_normal((t, 7, 7, C)).astype(np.float32)
            y = int(rng.choice([0, 2, 3, 4, 5]))
            for f in range(max(y, 1)):
                x[f, rng.integers(7), rng.integers(7), 0] = 3.0
            color = key % 3  # balanced, so the blind majority answer gets a third
            action = int(rng.integers(5))
            x[:, :, :, 1 + color] += 1.0
            ay, ax = rng.integers(7), rng.integers(7)
            x[:, ay, ax, 4 + action] = 3.0
            gif = f"unit_{key:04d}"
            writer.write(key, x, gif_name=gif, n_frames=t, indices=np.arange(t))
            rows[split]["count"].append([gif, "how many times does it flash ?", y, f"COUNT{key}", key])
            order = rng.permutation(5)
            cands = [ACTIONS[i] for i in order]
            rows[split]["action"].append(
                [gif, "what does it do ?", *cands, int(np.where(order == action)[0][0]), f"ACTION{key}", key])
            rows[split]["frameqa"].append(
                [gif, "what color is the shape ?", COLORS[color], 2, f"FRAMEQA{key}", key, "a shape ."])
    headers = {
        "count": ["gif_name", "question", "answer", "vid_id", "key"],
        "action": ["gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"],
        "frameqa": ["gif_name", "question", "answer", "type", "vid_id", "key", "description"],
    }
    for split, per_task in rows.items():
        for task, r in per_task.items():
            write_tsv(root / f"{split}_{task}_question.csv", headers[task], r)
    return root, feats_path


def train_args(**kw) -> argparse.Namespace:
    from stqa.engine import trainer as train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            argv.append(flag)
        else:
            argv += [flag, str(v)]
    return parser.parse_args(argv)


SMALL = dict(embed_dim=8, hidden_dim=16, att_hidden_dim=8, batch_size=16, dropout=0.0, lr=0.01,
             attention_impl="reference")
