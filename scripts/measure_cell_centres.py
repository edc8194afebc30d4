"""Where does each cell of a checkpoint's backbone map really look? (issue 22, the attention picture)

Two independent measurements on the model's own input (S x S, S = the checkpoint's image size):

* **placement**: one synthetic shape (radius 0.10 S, as `stqa synth` draws it) is drawn on the synthetic
  background at every position of a dense grid; a cell's response to a position is how far its feature
  vector moves from the empty frame's. A cell's centre is the response-weighted mean position over the
  positions where the response exceeds half its maximum, averaged over shapes and colours.
* **attention**: the QA model itself answers count and action questions about synthetic videos (which
  name one shape); in every sampled frame where its spatial attention peaks on one cell (weight > 0.3) and
  the named shape is visible, the shape's true centre is recorded against the peak cell. Column j's centre
  is the mean x of the shapes over the frames that peaked in column j (rows alike). This is what the
  picture must get right: where the attended thing is when the model puts its weight on a cell.
* **gradient**: the mean absolute input gradient of a cell's summed features over random synthetic-looking
  frames; a cell's centre is the gradient-weighted mean pixel.

Prints, per axis, each grid index's centre in input pixels (continuous coordinates: the input spans
[0, S], pixel k covers [k, k+1)) next to the centre a uniform stretch assumes, (i + 0.5) S / G.

    python scripts/measure_cell_centres.py [--checkpoint DIR] [--step 2]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from PIL import Image, ImageDraw

from stqa.checkpoint import BUNDLED_MODEL, load_checkpoint
from stqa.data import synth
from stqa.inference import model_from_checkpoint
from stqa.video.transforms import frames_to_tensor


def _frame(size: int, shape: str | None = None, cx: float = 0, cy: float = 0, color: str = "red") -> np.ndarray:
    im = Image.new("RGB", (size, size), synth.BACKGROUND_RGB)
    if shape is not None:
        # _draw_shape takes a palette index; draw on a one-channel mask and paint the colour through it.
        mask = Image.new("L", (size, size), 0)
        synth._draw_shape(ImageDraw.Draw(mask), shape, cx, cy, synth.BASE_RADIUS * size, 255)
        im.paste(synth.COLORS[color], mask=mask)
    return np.asarray(im)


def placement_centres(backbone, size: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(x centres [G, G], y centres [G, G]) from the shape-placement test."""
    positions = np.arange(step / 2, size, step)
    with torch.no_grad():
        empty = backbone(frames_to_tensor(_frame(size)[None], size))[0]  # [G, G, C]
    g = empty.shape[0]
    sum_w = np.zeros((g, g))
    sum_x = np.zeros((g, g))
    sum_y = np.zeros((g, g))
    for shape in ("circle", "square", "triangle", "cross"):
        for color in ("red", "green", "blue"):
            frames = np.stack([_frame(size, shape, x, y, color) for y in positions for x in positions])
            with torch.no_grad():
                maps = torch.cat([backbone(frames_to_tensor(part, size)) for part in np.array_split(frames, 16)])
            response = (maps - empty).norm(dim=-1).numpy().reshape(len(positions), len(positions), g, g)
            for i in range(g):
                for j in range(g):
                    r = response[:, :, i, j]
                    w = np.where(r >= 0.5 * r.max(), r, 0.0)
                    sum_w[i, j] += 1
                    sum_x[i, j] += (w.sum(axis=0) @ positions) / w.sum()
                    sum_y[i, j] += (w.sum(axis=1) @ positions) / w.sum()
    return sum_x / sum_w, sum_y / sum_w


def gradient_centres(backbone, size: int, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = np.stack([
        _frame(size, str(rng.choice(["circle", "square", "triangle", "cross"])), *rng.uniform(0.15, 0.85, 2) * size,
               str(rng.choice(["red", "green", "blue", "yellow", "purple"]))) for _ in range(n)])
    x = frames_to_tensor(frames, size).requires_grad_(True)
    maps = backbone(x)
    g = maps.shape[1]
    grid = np.arange(size) + 0.5
    cx, cy = np.zeros((g, g)), np.zeros((g, g))
    for i in range(g):
        for j in range(g):
            (grad,) = torch.autograd.grad(maps[:, i, j].sum(), x, retain_graph=True)
            w = grad.abs().sum(dim=(0, 1)).numpy()  # [S, S]
            cx[i, j] = (w.sum(axis=0) @ grid) / w.sum()
            cy[i, j] = (w.sum(axis=1) @ grid) / w.sum()
    return cx, cy


def attention_centres(checkpoint: str, videos: int, seed: int) -> tuple[list[float], list[float], list[int]]:
    """(x centre per column, y centre per row, frames counted per column) from the model's own attention."""
    import tempfile
    from pathlib import Path

    from stqa.inference import Predictor, Query

    predictor = Predictor.load(checkpoint)
    size = int(predictor.spec.image_size)
    xs: dict[int, list[float]] = {}
    ys: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(videos):
            scene, questions = synth.sample_video(seed, index)
            path = Path(tmp) / f"{index}.gif"
            synth.write_gif(synth.render_frames(scene, size), path)
            video = predictor.prepare_video(path)
            for q in questions:
                if q.task not in ("count", "action"):
                    continue
                text = q.fields["question"]
                words = text.lower().split()
                named = [o for o in scene.objects if o.color in words and o.shape in words]
                if len(named) != 1:
                    continue
                candidates = [q.fields[f"a{k}"] for k in range(1, 6)] if q.task == "action" else []
                (pred,) = predictor.predict([Query(q.task, text, video, candidates)])
                for k, frame in enumerate(video.frame_indices):
                    att = pred.spatial_attention[k]
                    x, y, _, visible, _ = synth.object_state(named[0], frame)
                    if not visible or att.max() < 0.3:
                        continue
                    i, j = np.unravel_index(int(np.argmax(att)), att.shape)
                    xs.setdefault(int(j), []).append(x * size)
                    ys.setdefault(int(i), []).append(y * size)
    g = 7
    return ([round(float(np.mean(xs[j])), 2) if j in xs else float("nan") for j in range(g)],
            [round(float(np.mean(ys[i])), 2) if i in ys else float("nan") for i in range(g)],
            [len(xs.get(j, [])) for j in range(g)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(BUNDLED_MODEL))
    parser.add_argument("--step", type=float, default=2.0, help="shape placement step in pixels")
    parser.add_argument("--attention-videos", type=int, default=0,
                        help="only the attention measurement, on this many synthetic videos")
    parser.add_argument("--seed", type=int, default=7, help="synthetic seed of the attention measurement")
    args = parser.parse_args()
    if args.attention_videos:
        ax, ay, n = attention_centres(args.checkpoint, args.attention_videos, args.seed)
        print(json.dumps({"attention_x": ax, "attention_y": ay, "frames_per_column": n}))
        return
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt)[0].eval()
    backbone = model.backbone
    size = int(ckpt.config["feature_spec"]["image_size"])
    px, py = placement_centres(backbone, size, args.step)
    gx, gy = gradient_centres(backbone, size)
    g = px.shape[0]
    uniform = (np.arange(g) + 0.5) * size / g
    # Per axis: column j's x centre averaged over rows, row i's y centre averaged over columns.
    result = {
        "image_size": size, "grid": g, "uniform": uniform.round(2).tolist(),
        "placement_x": px.mean(axis=0).round(2).tolist(), "placement_y": py.mean(axis=1).round(2).tolist(),
        "placement_spread_px": float(max(px.std(axis=0).max(), py.std(axis=1).max())),
        "gradient_x": gx.mean(axis=0).round(2).tolist(), "gradient_y": gy.mean(axis=1).round(2).tolist(),
        "cell_6_6": {"placement": [round(float(px[6, 6]), 2), round(float(py[6, 6]), 2)],
                     "gradient": [round(float(gx[6, 6]), 2), round(float(gy[6, 6]), 2)]} if g > 6 else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
