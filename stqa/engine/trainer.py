"""``stqa train``: train ST-VQA on TGIF-QA style data (one task or all four), single process or torchrun.

The options and their precedence are in :mod:`stqa.engine.config`; the run writes ``OUT/config.json``
(the resolved config). The run directory holds:

    config.json              the resolved training config
    split.json               per task: the train and validation GIF keys, and those dropped because a
                             Test_* file holds them (stqa.engine.split); reused by --resume
    log.jsonl                one line per epoch: train loss per task, validation metrics, time
    last/                    checkpoint after the last epoch (+ optimizer state, for --resume)
    best/                    checkpoint with the best validation score (model selection uses val only)

:func:`train` strings the stages of :mod:`stqa.engine.stages` together; each is named for what it does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from stqa.checkpoint import CONFIG_FILE
from stqa.data.dataset import QADataset, video_groups
from stqa.engine import recipe, stages
from stqa.engine.config import TrainConfig, add_arguments, resolve_config
from stqa.evaluation.evaluator import evaluate_datasets
from stqa.utils import comm

# The subcommand's interface (stqa.cli): the flags live with the options they set.
__all__ = ["add_arguments", "run", "train"]


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stqa train``."""
    cfg = resolve_config(args)
    generate = bool(getattr(args, "generate", False))
    if getattr(args, "dry_run", False):
        if getattr(args, "resume", False):
            raise SystemExit("error: --dry-run and --resume do not go together")
        return stages.dry_run(cfg, generate)
    rank, world, device = comm.init_distributed(cfg.device)
    try:
        return train(cfg, bool(getattr(args, "resume", False)), rank, world, device, generate)
    finally:
        comm.shutdown(world)


def train(cfg: TrainConfig, resume: bool, rank: int, world: int, device: torch.device,
          generate: bool = False) -> int:
    """One training run (or its continuation with ``resume``) on this rank; ``generate``: the synthetic
    preset's set is generated first when absent (:func:`stqa.engine.stages.ensure_synthetic`)."""
    out = Path(cfg.out)
    if rank == 0:
        stages.ensure_synthetic(cfg, generate)
    comm.barrier(world)
    names = stages.task_list(cfg.task, cfg.data)
    last_dir = stages.check_run_dir(out, resume)
    split = stages.split_records(cfg, names, out, rank)
    items = [r for t in names for r in split.train[t] + split.val[t]]  # every QA item the run reads a clip for

    # The model: continued from last/, or built (and its backbone pretrained) from the data.
    stages.seed_everything(cfg.seed)
    ckpt = None
    pretraining = None
    if resume:
        ckpt, model, word_vocab, answer_vocab, spec = stages.resume_model(last_dir, names, device)
        clips = stages.make_clips(cfg, items, spec)
        pretraining = ckpt.config.get("backbone_pretraining")
    else:
        word_vocab, answer_vocab = stages.build_vocabularies(split.train)
        if cfg.features:
            clips = stages.make_clips(cfg, items)
            spec = clips.spec
            if cfg.recipe:
                recipe.check_store(spec, cfg.features, names[0])
        else:
            spec = stages.frame_spec(cfg)
            clips = stages.make_clips(cfg, items, spec)
        model = stages.build_model(cfg, names, word_vocab, answer_vocab, spec, device)
        if cfg.pretrain_steps:
            pretraining = stages.pretrain(cfg, model, split.train, out, rank, world, device)
    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)

    # The data: every question encoded, every clip loaded (or encoded by the frozen backbone) once.
    def datasets(records: dict[str, list]) -> dict[str, QADataset]:
        return {t: QADataset(records[t], t, word_vocab, answer_vocab, clips, cfg.max_question_len) for t in names}

    train_sets, val_sets = datasets(split.train), datasets(split.val)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        print(
            f"training {cfg.variant} on {', '.join(f'{t} {len(train_sets[t])}/{len(val_sets[t])}' for t in names)}"
            f" (train/val) on {device} x{world}; {sum(p.numel() for p in model.parameters()):,} parameters",
            file=sys.stderr,
        )
    clips = stages.prepare_clips(cfg, model, clips, items, device)
    train_sets = {t: ds.with_clips(clips) for t, ds in train_sets.items()}
    val_sets = {t: ds.with_clips(clips) for t, ds in val_sets.items()}

    # The optimiser and the loop state (continued on --resume).
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    state = stages.LoopState()
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer)
        saved = ckpt.config["training"]
        state = stages.LoopState(saved["epoch"] + 1, saved["best_score"], saved["step"])
        if ckpt.rng_state is not None:
            torch.set_rng_state(ckpt.rng_state)
    step_model = stages.wrap_for_steps(model, names, world, device)
    writer = stages.open_tensorboard(cfg, rank)
    base_meta = stages.checkpoint_meta(cfg, out, model, word_vocab, answer_vocab, spec, pretraining, split,
                                       stages.answer_phrases(split.train))

    groups = video_groups(train_sets)
    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.time()
        losses = stages.train_epoch(cfg, epoch, state, model, step_model, optimizer, params, train_sets, groups,
                                    rank, world, device, writer)
        val_metrics = evaluate_datasets(model, val_sets, answer_vocab, cfg.eval_batch_size, device, rank, world)["metrics"]
        train_loss = stages.mean_losses(losses, names, world, device)
        score = stages.selection_score(val_metrics)
        improved = score > state.best_score
        state.best_score = max(state.best_score, score)
        summary = {
            "epoch": epoch,
            "step": state.step,
            "train_loss": train_loss,
            "val": val_metrics,
            "val_score": score,
            "best_score": state.best_score,
            "seconds": round(time.time() - t0, 2),
        }
        if rank == 0:
            stages.log_epoch(cfg, out, summary, improved, writer)
            stages.save_checkpoints(cfg, out, last_dir, model, optimizer, base_meta, summary, improved, world)
        comm.barrier(world)
    if writer is not None:
        writer.close()
    if rank == 0 and math.isfinite(state.best_score):
        print(f"best validation score {state.best_score:.4f}; checkpoint in {out / 'best'}", file=sys.stderr)
    return 0
