"""The stages of a training run, in the order :func:`stqa.engine.trainer.train` runs them: data (split,
vocabularies, clips), model (build or resume, perception pretraining, frozen-backbone encoding), the
distributed wrapper and logging, one epoch of steps, model selection, and checkpoints."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stqa import __version__, tasks
from stqa.checkpoint import FeatureSpec, encode_key_set, is_checkpoint, load_checkpoint, save_checkpoint
from stqa.data import tgifqa
from stqa.data.dataset import (
    FeatureClips,
    FrameClips,
    QADataset,
    check_clips,
    make_step_batch,
    training_schedule,
)
from stqa.engine.config import TrainConfig
from stqa.engine.split import RunSplit, build_split, split_for_run, summary_lines
from stqa.inference import model_from_checkpoint
from stqa.models.backbone import build_backbone
from stqa.models.encode import encode_clips
from stqa.models.stvqa import STVQA, ModelConfig, MultiTaskStep, task_loss
from stqa.progress import progress
from stqa.utils import comm


def seed_everything(seed: int) -> None:
    """Seed torch and numpy (the global generators training draws from)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


# -- data --------------------------------------------------------------------------------------------
def ensure_synthetic(cfg: TrainConfig, generate_missing: bool = False) -> None:
    """The synthetic preset's benchmark in ``--data``: used when there (and of this stqa's format), generated
    first when absent only if asked (``--generate``), so a mistyped ``--data`` is an error naming the command
    that generates the set rather than the silent start of a long generation."""
    if not cfg.synth_videos:
        if generate_missing:
            raise SystemExit("error: --generate generates the synthetic preset's set (--preset synthetic); "
                             "this run has none to generate")
        return
    # The renderer is only needed by the synthetic preset; keep it out of every other run's start-up.
    from stqa.data.synth import generate, read_meta, synth_command

    data, n_videos, seed = Path(cfg.data), int(cfg.synth_videos), int(cfg.synth_seed)
    if not any(data.glob("Train_*_question.csv")):
        if not generate_missing:
            state = "holds no Train_*_question.csv file" if data.is_dir() else "does not exist"
            raise SystemExit(f"error: --data {data} {state}; generate the synthetic set with "
                             f"`{synth_command(data, n_videos, seed)}`, or add --generate to do it here")
        generate(data, n_videos, seed, progress=sys.stderr.isatty(),
                 announce=lambda line: print(f"stqa train: {line}", file=sys.stderr))
        return
    try:
        read_meta(data)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}; move it away, and --generate generates a new set there") from err


def task_list(task: str, data: str | Path, split: str = "train") -> list[str]:
    """The run's tasks from ``--task``: a name or comma-separated list as given, or for ``all`` every
    task whose annotation file for ``split`` exists in ``data``. Checked up front: a missing folder or
    file is one line naming every missing file and the folder."""
    data = Path(data)
    if not data.is_dir():
        raise SystemExit(f"error: --data {data} {'is not a folder' if data.exists() else 'does not exist'}")
    every = task.strip() == "all"
    wanted = tasks.TASK_NAMES if every else tasks.parse_task_list(task)
    available = tgifqa.available_tasks(data, split)
    present = [t for t in wanted if t in available]
    missing = [tgifqa.annotation_filename(t, split) for t in wanted if t not in present]
    if every and not present:
        raise SystemExit(f"error: {data} holds no {split} annotation file (looked for {', '.join(missing)})")
    if not every and missing:
        raise SystemExit(f"error: {data} lacks {', '.join(missing)} (--task {task})")
    return present


def split_records(cfg: TrainConfig, names: list[str], out: Path, rank: int) -> RunSplit:
    """The run's split (:mod:`stqa.engine.split`: test GIFs of any task dropped, one set of validation GIFs
    for all tasks), reused from ``out`` when recorded there, written by rank 0; prints the dropped counts."""
    split = split_for_run(cfg.data, names, cfg.val_fraction, cfg.seed, out, write=rank == 0)
    if rank == 0:
        for line in summary_lines(split):
            print(line, file=sys.stderr)
    return split


def build_vocabularies(train: dict[str, list]) -> tuple[tgifqa.Vocab, tgifqa.Vocab | None]:
    """The word vocabulary of every training question, and the answer vocabulary of the task that
    answers with words (None without one)."""
    word_vocab = tgifqa.build_word_vocab([r for t in train for r in train[t]])
    worded = [t for t in train if tasks.get(t).target == "answer_word"]
    answer_vocab = tgifqa.build_answer_vocab(train[worded[0]]) if worded else None
    return word_vocab, answer_vocab


def frame_spec(cfg: TrainConfig) -> FeatureSpec:
    """The feature spec of end-to-end training on decoded videos (the backbone's channels)."""
    channels = int(build_backbone(cfg.backbone).out_channels)
    return FeatureSpec(backbone=cfg.backbone, channels=channels, num_frames=int(cfg.num_frames),
                       policy=cfg.policy, image_size=int(cfg.image_size))


def make_clips(cfg: TrainConfig, records: list[tgifqa.QARecord], spec: FeatureSpec | None = None):
    """The clip source for the config (a feature store or decoded videos), checked to hold a clip for
    every one of ``records`` before anything is built or trained."""
    if cfg.features:
        from stqa.data.features import FeatureStore  # h5py: only for feature-store runs

        clips = FeatureClips(FeatureStore(cfg.features))
    else:
        clips = FrameClips(cfg.videos, spec)
    check_clips(clips, records)
    return clips


def load_glove(path: str, vocab, dim: int) -> torch.Tensor:
    """A (V, dim) matrix from a GloVe-format text file: row i is the vector of vocab word i.

    <pad> is zero; <unk> and words missing from the file get small random vectors (seeded by the
    global torch RNG). The official code's off-by-two lookup is not reproduced (docs/fidelity.md).
    """
    matrix = torch.randn(len(vocab), dim) * 0.1
    matrix[0] = 0
    found = 0
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError as err:
        raise SystemExit(f"error: cannot read --glove file {path}: {err}") from err
    with fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip().split(" ")
            if len(parts) < 2:
                continue
            if len(parts) != dim + 1:
                raise SystemExit(
                    f"error: {path}:{lineno}: vector has {len(parts) - 1} dims, --embed-dim is {dim}"
                )
            idx = vocab.stoi.get(parts[0])
            if idx is not None and idx >= 2:
                matrix[idx] = torch.tensor([float(x) for x in parts[1:]])
                found += 1
    print(f"glove: {found}/{len(vocab) - 2} vocabulary words found in {path}", file=sys.stderr)
    return matrix


# -- model -------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, names: list[str], word_vocab, answer_vocab, spec: FeatureSpec,
                device: torch.device) -> STVQA:
    """A fresh model for the config (GloVe embeddings if given), on ``device``."""
    seed_everything(cfg.seed)
    embeddings = load_glove(cfg.glove, word_vocab, cfg.embed_dim) if cfg.glove else None
    model_cfg = ModelConfig(
        variant=cfg.variant, tasks=names, vocab_size=len(word_vocab), feature_dim=int(spec.channels),
        num_answers=len(answer_vocab) if answer_vocab is not None else 0, embed_dim=cfg.embed_dim,
        hidden_dim=cfg.hidden_dim, att_hidden_dim=cfg.att_hidden_dim, dropout=cfg.dropout,
        backbone=cfg.backbone, attention_impl=cfg.attention_impl,
        freeze_embeddings=embeddings is not None, attended_position=bool(cfg.attended_position),
        question_gate=bool(cfg.question_gate),
    )
    return STVQA(model_cfg, embeddings).to(device)


def check_run_dir(out: Path, resume: bool) -> Path:
    """The run's ``last/`` checkpoint directory: present with --resume, absent without."""
    last_dir = out / "last"
    if resume and not is_checkpoint(last_dir):
        raise SystemExit(f"error: --resume but {last_dir} has no checkpoint")
    if not resume and is_checkpoint(last_dir):
        raise SystemExit(f"error: {out} already holds a run; use --resume or another --out")
    return last_dir


def resume_model(last_dir: Path, names: list[str], device: torch.device):
    """(checkpoint with optimizer state, model, word vocab, answer vocab, spec) of the run to continue."""
    ckpt = load_checkpoint(last_dir, with_optimizer=True)
    model, word_vocab, answer_vocab, spec = model_from_checkpoint(ckpt, device)
    ckpt_tasks = ckpt.config["model"]["tasks"]
    if sorted(ckpt_tasks) != sorted(names):
        raise SystemExit(f"error: --resume: the run trains {ckpt_tasks}, the data gives {names}")
    return ckpt, model, word_vocab, answer_vocab, spec


def pretrain(cfg: TrainConfig, model: STVQA, train: dict[str, list], out: Path, rank: int, world: int,
             device: torch.device) -> dict:
    """Perception pretraining of ``model.backbone`` on the training videos' scene labels (rank 0, then
    broadcast so every rank starts QA training from the same backbone). Returns what the checkpoint records."""
    # The scene-label reader and its losses: only for --pretrain-steps.
    from stqa.pretrain import pretrain_backbone

    names = [r.gif_name for t in train for r in train[t]]
    stats: dict = {}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"perception pretraining of the {cfg.backbone} backbone: {cfg.pretrain_steps} steps on "
              f"{len(set(names))} training videos", file=sys.stderr)
        t0 = time.time()
        stats = pretrain_backbone(
            model.backbone, cfg.data, names, int(cfg.pretrain_steps), image_size=int(cfg.image_size),
            seed=int(cfg.seed), device=device, log_path=out / "pretrain.jsonl",
        )
        print("pretraining done in {:.0f}s: colour {:.1%}, shape {:.1%}, empty {:.1%} of cells right, "
              "geometry error {:.3f}".format(time.time() - t0, stats["color_acc"], stats["shape_acc"],
                                             stats["empty_acc"], stats["geometry_l1"]), file=sys.stderr)
    for tensor in model.backbone.state_dict().values():
        comm.broadcast_(tensor, world)
    seed_everything(cfg.seed)  # QA training starts from the same RNG state with or without pretraining
    return {"steps": int(cfg.pretrain_steps), **{k: round(float(v), 4) for k, v in stats.items()}}


def prepare_clips(cfg: TrainConfig, model: STVQA, clips, records: list, device: torch.device):
    """Load every clip the run will read once, up front. With a frozen backbone its maps are computed
    here, once per video (:func:`stqa.models.encode.encode_clips`, kept in float16), and the steps run on
    them; otherwise decoded frames are cached."""
    if cfg.freeze_backbone:
        return encode_clips(model.backbone, clips, records, device, cache_dtype=torch.float16,
                            desc="backbone features")
    clips.preload(records, desc="decoding videos")
    return clips


def wrap_for_steps(model: STVQA, names: list[str], world: int, device: torch.device) -> torch.nn.Module:
    """The module a step calls: the multi-task forward, under DistributedDataParallel with several ranks."""
    step_model: torch.nn.Module = MultiTaskStep(model)
    if world > 1:
        # find_unused_parameters: a rank's share of a step may lack a task, leaving that head unused.
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=len(names) > 1,
        )
    return step_model


def open_tensorboard(cfg: TrainConfig, rank: int):
    """A TensorBoard writer on rank 0 with --tensorboard, else None."""
    if not cfg.tensorboard or rank != 0:
        return None
    try:
        # tensorboard is optional (stqa[tensorboard]) and slow to import.
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise SystemExit(
            "error: --tensorboard needs the tensorboard package (pip install 'stqa[tensorboard]')"
        ) from err
    return SummaryWriter(cfg.tensorboard)


# -- the loop ----------------------------------------------------------------------------------------
@dataclass
class LoopState:
    """What carries from epoch to epoch (and over --resume)."""

    epoch: int = 0
    best_score: float = float("-inf")
    step: int = 0


def train_epoch(cfg: TrainConfig, epoch: int, state: LoopState, model: STVQA, step_model: torch.nn.Module,
                optimizer: torch.optim.Optimizer, params: list, train_sets: dict[str, QADataset], groups: dict,
                rank: int, world: int, device: torch.device, writer) -> dict[str, list[float]]:
    """One epoch of multi-task steps; returns each task's step losses (this rank's)."""
    model.train()
    if cfg.freeze_backbone:
        model.backbone.eval()  # fixed BatchNorm statistics too: the cached maps stay the model's maps
    schedule = training_schedule(groups, cfg.batch_size, cfg.seed, epoch, world)
    losses: dict[str, list[float]] = {t: [] for t in train_sets}
    bar = progress(schedule, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=rank != 0, leave=False)
    for keys in bar:
        batch = make_step_batch(train_sets, groups, keys[rank::world])
        inputs = {t: {k: v.to(device) for k, v in x.items()} for t, x in batch["inputs"].items()}
        clip_kw = {k: batch[k].to(device) for k in ("features", "frames") if k in batch}
        outputs = step_model(inputs, batch["frame_mask"].to(device), **clip_kw)
        task_losses = {t: task_loss(t, o.scores, batch["targets"][t].to(device)) for t, o in outputs.items()}
        loss = sum(task_losses.values())
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at epoch {epoch + 1}, step {state.step}: "
                               f"{ {t: float(v.detach()) for t, v in task_losses.items()} }")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        state.step += 1
        for t, v in task_losses.items():
            losses[t].append(float(v.detach()))
            if writer is not None:
                writer.add_scalar(f"train/loss_{t}", float(v.detach()), state.step)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    return losses


def mean_losses(losses: dict[str, list[float]], names: list[str], world: int, device) -> dict:
    """Per-task mean training loss of the epoch over all ranks (each rank saw its share of the videos)."""
    sums = torch.tensor([[sum(losses[t]), len(losses[t])] for t in names], dtype=torch.float64, device=device)
    comm.all_reduce_sum_(sums, world)
    return {t: (float(s / n) if n else None) for t, (s, n) in zip(names, sums.tolist(), strict=True)}


def selection_score(val_metrics: dict) -> float:
    """One number to pick the best epoch on validation: the mean over tasks of accuracy, and of
    1 / (1 + MSE) for count (both in (0, 1], higher is better)."""
    scores = []
    for task, m in val_metrics.items():
        value = tasks.get(task).headline(m)
        scores.append(1.0 / (1.0 + value) if tasks.get(task).lower_is_better else value)
    return float(np.mean(scores)) if scores else float("-inf")


def _brief(task: str, m: dict) -> str:
    spec = tasks.get(task)
    return f"{task} {m['mse']:.3f} mse" if spec.metric == "mse" else f"{task} {100 * m['accuracy']:.1f}%"


def log_epoch(cfg: TrainConfig, out: Path, summary: dict, improved: bool, writer) -> None:
    """Rank 0: one line of log.jsonl, one line on stderr, TensorBoard scalars."""
    with open(out / "log.jsonl", "a") as fh:
        fh.write(json.dumps(summary) + "\n")
    val_metrics = summary["val"]
    brief = ", ".join(_brief(t, m) for t, m in val_metrics.items())
    loss_txt = ", ".join(f"{t} {v:.3f}" for t, v in summary["train_loss"].items() if v is not None)
    print(
        f"epoch {summary['epoch'] + 1}/{cfg.epochs}: loss {loss_txt} | val {brief}"
        f"{' (best)' if improved else ''} [{summary['seconds']:.0f}s]",
        file=sys.stderr,
    )
    if writer is not None:
        for t, m in val_metrics.items():
            writer.add_scalar(f"val/{t}", tasks.get(t).headline(m), summary["step"])


def answer_phrases(train: dict[str, list]) -> dict[str, list[str]]:
    """Every candidate text of each multiple-choice task's training records, unique and sorted: what the
    Predictor scores a question against when it comes without candidates."""
    return {task: sorted({c.strip() for r in records for c in r.candidates if c.strip()})
            for task, records in train.items() if tasks.get(task).multiple_choice}


def _split_counts(records: list) -> dict[str, int]:
    return {"questions": len(records), "videos": len({r.key for r in records})}


def training_data(cfg: TrainConfig, split: RunSplit) -> dict:
    """The checkpoint's ``training_data``: what the model saw, in words a user can check against a set.

    Every run: the annotation folder as given, the Train files read, the Test files whose GIFs were held
    out, and per task the train / validation / dropped questions and videos. A ``stqa synth`` set (its
    ``synth.json``) also records seed, size and test fraction, the same entry the bundled model has: a
    scene depends only on (seed, index), so ``stqa evaluate`` can tell this checkpoint's training videos
    in any set generated with that seed, whatever its size (``training_overlap_warning``).
    """
    record: dict = {
        "data": str(cfg.data),
        "files": [tgifqa.annotation_filename(t, "train") for t in split.tasks],
        "held_out_by": list(split.test_files),
        "tasks": {t: {"train": _split_counts(part.train), "val": _split_counts(part.val),
                      "dropped_test_overlap": _split_counts(part.dropped)} for t, part in split.tasks.items()},
        "videos": {"train": len({r.key for s in split.tasks.values() for r in s.train}),
                   "val": len({r.key for s in split.tasks.values() for r in s.val})},
    }
    if (Path(cfg.data) / "synth.json").is_file():
        from stqa.data.synth import read_meta  # torch-free, but only synthetic sets need it

        try:
            meta = read_meta(cfg.data)
        except ValueError:
            # Another synthetic format renders other scenes for the same (seed, index): claiming its
            # videos by seed would be wrong, so the record stays the plain one.
            return record
        seed, videos = int(meta["seed"]), int(meta["n_videos"])
        record["synthetic"] = {
            "seed": seed, "videos": videos, "test_fraction": float(meta["test_fraction"]),
            "note": f"stqa synth --seed {seed} --videos {videos} ({cfg.data}): trained on its train split "
                    "(validation carved from it), never on its test split",
        }
    return record


def checkpoint_meta(cfg: TrainConfig, out: Path, model: STVQA, word_vocab, answer_vocab, spec: FeatureSpec,
                    pretraining: dict | None, split: RunSplit, phrases: dict[str, list[str]] | None = None) -> dict:
    """What every checkpoint of the run records besides the training summary; ``training_keys`` are the
    GIFs it trained or validated on, so ``stqa evaluate`` can check them against the keys it scores, and
    ``training_data`` says which data those were (:func:`training_data`; ``phrases``: see
    :func:`answer_phrases`)."""
    return {
        "answer_phrases": phrases or {},
        "name": cfg.name or out.name,
        "stqa_version": __version__,
        "model": model.config.to_dict(),
        "word_vocab": word_vocab.to_dict(),
        "answer_vocab": answer_vocab.to_dict() if answer_vocab is not None else None,
        "feature_spec": spec.to_dict(),
        "max_question_len": cfg.max_question_len,
        "backbone_pretraining": pretraining,
        "training_keys": encode_key_set(split.seen_keys()),
        "training_data": training_data(cfg, split),
    }


def save_checkpoints(cfg: TrainConfig, out: Path, last_dir: Path, model: STVQA, optimizer, base_meta: dict,
                     summary: dict, improved: bool, world: int) -> None:
    """Rank 0: ``best/`` when validation improved, and ``last/`` with optimizer and RNG state (--resume)."""
    training = {k: summary[k] for k in ("epoch", "step", "val", "val_score", "best_score")}
    training.update(seed=cfg.seed, epochs=cfg.epochs, world_size=world)
    meta = dict(base_meta, training=training)
    if improved:
        save_checkpoint(out / "best", model.state_dict(), meta)
    save_checkpoint(
        last_dir, model.state_dict(), meta, optimizer_state=optimizer.state_dict(),
        rng_state=torch.get_rng_state(),
    )


# -- dry run -----------------------------------------------------------------------------------------
VOCAB_FILE = "vocab.json"


def dry_run(cfg: TrainConfig, generate_missing: bool = False) -> int:
    """``stqa train --dry-run``: build the split and the vocabularies, print a per-task summary, train
    nothing. With ``--out`` the split (``split.json``, which a later run there reuses) and the
    vocabularies (``vocab.json``) are written; without, only printed. ``generate_missing``: as
    :func:`ensure_synthetic`."""
    ensure_synthetic(cfg, generate_missing)
    names = task_list(cfg.task, cfg.data)
    out = Path(cfg.out) if cfg.out else None
    if out is not None and is_checkpoint(out / "last"):
        raise SystemExit(f"error: {out} already holds a run; --dry-run needs a fresh --out (or none)")
    if out is not None:
        split = split_for_run(cfg.data, names, cfg.val_fraction, cfg.seed, out, write=True)
    else:
        split = build_split(cfg.data, names, cfg.val_fraction, cfg.seed)
    word_vocab, answer_vocab = build_vocabularies(split.train)
    print(f"dry run over {cfg.data}: test files {', '.join(split.test_files) or 'none'}")
    header = ("task", "questions train/val", "GIFs train/val", "dropped GIFs (questions)", "task words")
    rows = [header]
    for task, part in split.tasks.items():
        keys = part.keys()
        own_words = len(tgifqa.build_word_vocab(part.train))
        rows.append((task, f"{len(part.train)}/{len(part.val)}", f"{len(keys['train'])}/{len(keys['val'])}",
                     f"{len(keys['dropped_test_overlap'])} ({len(part.dropped)})", str(own_words)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    answers = f", answer vocabulary {len(answer_vocab)}" if answer_vocab is not None else ""
    print(f"word vocabulary of the run (all its tasks) {len(word_vocab)}{answers} (sizes include <pad>, <unk>)")
    if out is not None:
        (out / VOCAB_FILE).write_text(json.dumps({
            "word_vocab": word_vocab.to_dict(),
            "answer_vocab": answer_vocab.to_dict() if answer_vocab is not None else None,
        }) + "\n")
        print(f"wrote {out / 'split.json'} and {out / VOCAB_FILE}; nothing trained")
    else:
        print("nothing trained or written (give --out to record split.json and vocab.json)")
    return 0
