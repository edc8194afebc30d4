"""``stqa train --preset tgifqa-stvqa``: the paper's setup as far as the official code shows it.

The values, line by line against the official code, are in docs/fidelity.md ("The paper's recipe"). Two
things cannot be a preset value and are checked instead: the run trains exactly one task, and the feature
store holds what the official models read (ResNet-152 ``res5c`` appearance plus a motion stream, T = 35,
7 x 7 maps). A store lacking any of it is refused with everything that is missing.
"""

from __future__ import annotations

import sys

from stqa import tasks
from stqa.checkpoint import FeatureSpec

NAME = "tgifqa-stvqa"

#: The preset's values (docs/fidelity.md, the table under "The paper's recipe").
VALUES: dict = {
    "recipe": NAME,
    "variant": "sptp",
    "hidden_dim": 512,
    "att_hidden_dim": 512,
    "embed_dim": 300,
    "lr": 1e-3,
    "batch_size": 64,
    "grad_clip": 5.0,
    "dropout": 0.2,
    # [cvpr] num_epochs; the official runs were stopped by hand at the best validation checkpoint.
    "epochs": 300,
    "max_question_len": 35,
    "val_fraction": 0.1,
    "policy": "uniform",
    "num_frames": 35,
}

APPEARANCE = "resnet152"
APPEARANCE_CHANNELS = 2048
PAPER_MOTION = "c3d"
NUM_FRAMES = 35


def check_task(cfg) -> None:
    """One task per run, as officially (``--dry-run`` too); a one-line ``SystemExit`` otherwise."""
    names = [t.strip() for t in str(cfg.task).split(",") if t.strip()]
    if len(names) != 1 or names[0] not in tasks.TASK_NAMES:
        raise SystemExit(f"error: --preset {NAME} trains one model per task, as the official code does: give "
                         f"--task with one of {', '.join(tasks.TASK_NAMES)} (not {cfg.task!r})")


def check_config(cfg) -> None:
    """What the recipe needs of the options (``TrainConfig.validate``); one-line ``SystemExit`` errors."""
    check_task(cfg)
    if not cfg.glove:
        raise SystemExit(f"error: --preset {NAME} uses frozen 300-d word vectors: give --glove FILE (a GloVe-format "
                         "text file, one 'word v1 ... v300' per line)")
    if cfg.videos or cfg.backbone:
        raise SystemExit(f"error: --preset {NAME} reads a feature store (--features, from stqa extract --backbone "
                         f"{APPEARANCE} --motion {PAPER_MOTION}), not --videos/--backbone")


def missing_from_store(spec: FeatureSpec) -> list[str]:
    """What a feature store's spec lacks for the recipe (empty when it fits)."""
    missing = []
    if spec.backbone != APPEARANCE or spec.appearance_channels != APPEARANCE_CHANNELS:
        missing.append(f"{APPEARANCE} res5c appearance ({APPEARANCE_CHANNELS} channels; the store has "
                       f"{spec.backbone}, {spec.appearance_channels})")
    if not spec.motion_backbone:
        missing.append(f"a motion stream (stqa extract --motion {PAPER_MOTION} --motion-weights c3d.pickle)")
    if int(spec.num_frames) != NUM_FRAMES:
        missing.append(f"T = {NUM_FRAMES} frames (the store has {spec.num_frames}; stqa extract --frames {NUM_FRAMES})")
    if spec.policy != "uniform":
        missing.append(f"uniform frame sampling (the store has {spec.policy})")
    return missing


def check_store(spec: FeatureSpec, path: str, task: str) -> None:
    """Refuse a store lacking what the recipe needs; print the known remaining gaps for one that fits."""
    missing = missing_from_store(spec)
    if missing:
        raise SystemExit(f"error: --preset {NAME}: feature store {path} lacks " + "; ".join(missing))
    notes = []
    if spec.motion_backbone != PAPER_MOTION:
        notes.append(f"the motion stream is {spec.motion_backbone}, the paper's is {PAPER_MOTION} (Sports-1M)")
    if task == "count":
        notes.append("the official Count model reads the motion stream only; this one reads both")
    notes.append("Tp/Concat would read C3D fc6 officially; stqa pools the conv map (sptp, the preset's variant, "
                 "reads the maps as the paper does)")
    for note in notes:
        print(f"{NAME}: note: {note}", file=sys.stderr)
