"""``stqa train``: train ST-VQA on TGIF-QA style data (one task or all four), single process or torchrun.

Config precedence: built-in defaults < ``--preset`` < ``--config FILE`` (JSON or TOML) < explicit CLI
flags. The resolved config is written to ``OUT/config.json``. The run directory holds:

    config.json              the resolved training config
    val_split.json           the fixed validation split (GIF keys, all tasks), reused by --resume
    log.jsonl                one line per epoch: train loss per task, validation metrics, time
    last/                    checkpoint after the last epoch (+ optimizer state, for --resume)
    best/                    checkpoint with the best validation score (model selection uses val only)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stqa.models.stvqa import SPATIAL_VARIANTS, STVQA, TASKS, VARIANTS, ModelConfig, MultiTaskStep, task_loss

DEFAULTS: dict = {
    "task": "all",
    "variant": "sptp",
    "data": None,
    "features": None,
    "videos": None,
    "backbone": None,
    "out": None,
    "epochs": 30,
    "batch_size": 64,
    "eval_batch_size": 64,
    "lr": 1e-3,
    "grad_clip": 5.0,
    "dropout": 0.2,
    "embed_dim": 300,
    "hidden_dim": 512,
    "att_hidden_dim": 512,
    "glove": None,
    "num_frames": 35,
    "image_size": 112,
    "policy": "uniform",
    "val_fraction": 0.1,
    "seed": 0,
    "device": "cpu",
    "attention_impl": "fused",
    "max_question_len": 35,
    "tensorboard": None,
    "name": None,
    "synth_videos": 0,
    "synth_seed": 0,
    "pretrain_steps": 0,
    "freeze_backbone": False,
    "attended_position": False,
    "question_gate": False,
}

PRESETS: dict[str, dict] = {
    # The bundled default model (make model): all four tasks, tiny backbone first pretrained on the
    # synthetic scenes' labels (what is where, stqa.pretrain) and then kept fixed while the QA model trains
    # on its maps of the decoded GIFs (4x faster steps); small hidden sizes so the checkpoint is a few MB.
    # 24,000 videos and the question gate: in count-only probes on 6,000 videos plain sptp memorised the count
    # questions (best validation MSE 2.06) where the gated model generalised (0.77); docs/training.md.
    "synthetic": {
        "task": "all",
        "variant": "sptp",
        "data": "data/synth24000",
        "videos": "data/synth24000/gifs",
        "backbone": "tiny",
        "synth_videos": 24000,
        "synth_seed": 0,
        "pretrain_steps": 1000,
        "freeze_backbone": True,
        "question_gate": True,
        "epochs": 16,
        "batch_size": 64,
        "embed_dim": 64,
        "hidden_dim": 128,
        "att_hidden_dim": 64,
        # The synthetic clips have up to 48 frames and 2-frame events: T = 25 keeps one of every two frames.
        "num_frames": 25,
        "image_size": 112,
        "dropout": 0.1,
        "name": "stqa-synthetic",
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stqa train`` (every default is None so the config file and preset can fill it)."""
    a = parser.add_argument
    a("--task", choices=[*TASKS, "all"], help="task to train, or all (one head per task; default all)")
    a("--variant", choices=VARIANTS, help="model variant (default sptp)")
    a("--data", help="directory with the TGIF-QA Train_/Test_*_question.csv files")
    a("--features", help="HDF5 feature store (stqa extract); or use --videos with --backbone")
    a("--videos", help="directory of <gif_name>.gif videos, decoded and fed to --backbone end to end")
    a("--backbone", help="backbone trained end to end on frames (with --videos), e.g. tiny")
    a("--out", help="run directory (checkpoints, split, logs)")
    a("--config", help="JSON or TOML file with any of these options (CLI flags override it)")
    a("--preset", choices=sorted(PRESETS), help="a named recipe; 'synthetic' trains the bundled model")
    a("--epochs", type=int)
    a("--batch-size", type=int, help="QA items per step, all tasks together (whole videos; default 64)")
    a("--eval-batch-size", type=int)
    a("--lr", type=float, help="Adam learning rate (default 1e-3)")
    a("--grad-clip", type=float, help="global gradient-norm clip (default 5)")
    a("--dropout", type=float)
    a("--embed-dim", type=int)
    a("--hidden-dim", type=int, help="LSTM hidden size per layer (default 512)")
    a("--att-hidden-dim", type=int)
    a("--glove", help="GloVe-format text file: frozen word vectors (else learned embeddings)")
    a("--num-frames", type=int, help="T for end-to-end frames (features use the store's T)")
    a("--image-size", type=int)
    a("--policy", help="frame sampling policy for --videos (default uniform)")
    a("--val-fraction", type=float)
    a("--seed", type=int)
    a("--device", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    a("--attention-impl", choices=["fused", "reference"])
    a("--tensorboard", help="also log to TensorBoard in this directory (needs the tensorboard package)")
    a("--name", help="model name recorded in the checkpoint (model_version = name-<sha>)")
    a("--pretrain-steps", type=int,
      help="first train the backbone this many steps on the synthetic set's scene labels (stqa.pretrain; "
           "needs a `stqa synth` set; default 0)")
    a("--freeze-backbone", action="store_true", default=None,
      help="keep the (pretrained) backbone fixed during QA training: its maps are computed once per video")
    a("--attended-position", action="store_true", default=None,
      help="also feed the video LSTM where spatial attention looked (its weighted cell row and column), "
           "which pooled features lose (not in ST-VQA; needs variant sp or sptp)")
    a("--question-gate", action="store_true", default=None,
      help="scale the video LSTM's input channels by a sigmoid gate computed from the question, so it follows "
           "what the question asks about (not in ST-VQA; needs variant sp or sptp)")
    a("--resume", action="store_true", help="continue from OUT/last")


def _read_config_file(path: str) -> dict:
    p = Path(path)
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.10
        tomllib = None
    try:
        if p.suffix == ".toml":
            if tomllib is None:
                raise SystemExit("error: TOML config files need Python >= 3.11; use JSON")
            data = tomllib.loads(p.read_text())
        else:
            data = json.loads(p.read_text())
    except FileNotFoundError as err:
        raise SystemExit(f"error: config file {p} does not exist") from err
    except (json.JSONDecodeError, ValueError) as err:  # TOMLDecodeError is a ValueError
        raise SystemExit(f"error: config file {p} is not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {err}") from err
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise SystemExit(f"error: unknown option(s) in {p}: {', '.join(unknown)}")
    return data


def resolve_config(args: argparse.Namespace) -> dict:
    """Defaults < preset < config file < explicit flags."""
    cfg = dict(DEFAULTS)
    if getattr(args, "preset", None):
        cfg.update(PRESETS[args.preset])
    if getattr(args, "config", None):
        cfg.update(_read_config_file(args.config))
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if not cfg["out"]:
        raise SystemExit("error: --out is required")
    if not cfg["data"]:
        raise SystemExit("error: --data is required (or --preset)")
    if bool(cfg["features"]) == bool(cfg["videos"]):
        raise SystemExit("error: give exactly one of --features (HDF5 store) or --videos (with --backbone)")
    if cfg["videos"] and not cfg["backbone"]:
        raise SystemExit("error: --videos needs --backbone (e.g. tiny) to turn frames into features")
    if cfg["features"] and cfg["backbone"]:
        raise SystemExit("error: --backbone is for end-to-end training on --videos, not with --features")
    if (cfg["pretrain_steps"] or cfg["freeze_backbone"]) and not cfg["backbone"]:
        raise SystemExit("error: --pretrain-steps and --freeze-backbone need a backbone (--videos with --backbone)")
    # Checked here too (ModelConfig checks it again) so the error comes before any data is loaded.
    for option in ("attended_position", "question_gate"):
        if cfg[option] and cfg["variant"] not in SPATIAL_VARIANTS:
            flag = "--" + option.replace("_", "-")
            raise SystemExit(f"error: {flag} needs spatial attention (--variant sp or sptp), not {cfg['variant']}")
    if int(cfg["pretrain_steps"]) < 0:
        raise SystemExit(f"error: --pretrain-steps must be >= 0, got {cfg['pretrain_steps']}")
    return cfg


# -- distributed helpers ------------------------------------------------------------------------------
def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment (1 process otherwise)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Start the process group under torchrun (nccl on GPU, gloo on CPU); returns (rank, world, device)."""
    rank, world, local = dist_info()
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but CUDA is not available")
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


# -- data --------------------------------------------------------------------------------------------
def ensure_synthetic(cfg: dict) -> None:
    """The synthetic preset generates its benchmark on first use."""
    if not cfg.get("synth_videos"):
        return
    from stqa.data.synth import generate, read_meta

    data = Path(cfg["data"])
    if not any(data.glob("Train_*_question.csv")):
        print(f"generating the synthetic benchmark in {data} ({cfg['synth_videos']} videos)", file=sys.stderr)
        generate(data, int(cfg["synth_videos"]), int(cfg["synth_seed"]))
        return
    try:
        read_meta(data)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}; move it away so the preset generates a new set there") from err


def task_list(task: str, data: str | Path, split: str = "train") -> list[str]:
    """``all`` = every task whose annotation file for ``split`` exists in ``data``."""
    from stqa.data.tgifqa import TASKS as DATA_TASKS
    if task != "all":
        return [task]
    from stqa.data.tgifqa import annotation_filename

    present = [t for t in DATA_TASKS if (Path(data) / annotation_filename(t, split)).is_file()]
    if not present:
        raise SystemExit(f"error: no {split} annotation files for any task in {data}")
    return present


def make_clips(cfg: dict, spec_for_frames=None):
    """The clip source for the config: a feature store or decoded videos."""
    from stqa.data.dataset import FeatureClips, FrameClips

    if cfg["features"]:
        from stqa.data.features import FeatureStore

        return FeatureClips(FeatureStore(cfg["features"]))
    return FrameClips(cfg["videos"], spec_for_frames)


def spec_dict(spec) -> dict:
    from stqa.checkpoint import SPEC_FIELDS

    return {f: getattr(spec, f) for f in SPEC_FIELDS}


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


# -- the loop ----------------------------------------------------------------------------------------
def selection_score(val_metrics: dict) -> float:
    """One number to pick the best epoch on validation: the mean over tasks of accuracy, and of
    1 / (1 + MSE) for count (both in (0, 1], higher is better)."""
    scores = []
    for task, m in val_metrics.items():
        scores.append(1.0 / (1.0 + m["mse"]) if task == "count" else m["accuracy"])
    return float(np.mean(scores)) if scores else float("-inf")


def _mean_losses(losses: dict[str, list[float]], tasks: list[str], world: int, device) -> dict:
    """Per-task mean training loss of the epoch over all ranks (each rank saw its share of the videos)."""
    sums = torch.tensor([[sum(losses[t]), len(losses[t])] for t in tasks], dtype=torch.float64, device=device)
    if world > 1:
        torch.distributed.all_reduce(sums)
    return {t: (float(s / n) if n else None) for t, (s, n) in zip(tasks, sums.tolist(), strict=True)}


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    rank, world, device = init_distributed(cfg["device"])
    try:
        return _train(cfg, bool(getattr(args, "resume", False)), rank, world, device)
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _pretrain(cfg: dict, model: STVQA, train_records: dict, out: Path, rank: int, world: int,
              device: torch.device) -> dict:
    """Perception pretraining of ``model.backbone`` on the training videos' scene labels (rank 0, then
    broadcast so every rank starts QA training from the same backbone). Returns what the checkpoint records."""
    from stqa.pretrain import pretrain_backbone

    names = [r.gif_name for t in train_records for r in train_records[t]]
    stats: dict = {}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"perception pretraining of the {cfg['backbone']} backbone: {cfg['pretrain_steps']} steps on "
              f"{len(set(names))} training videos", file=sys.stderr)
        t0 = time.time()
        stats = pretrain_backbone(
            model.backbone, cfg["data"], names, int(cfg["pretrain_steps"]), image_size=int(cfg["image_size"]),
            seed=int(cfg["seed"]), device=device, log_path=out / "pretrain.jsonl",
        )
        print("pretraining done in {:.0f}s: colour {:.1%}, shape {:.1%}, empty {:.1%} of cells right, "
              "geometry error {:.3f}".format(time.time() - t0, stats["color_acc"], stats["shape_acc"],
                                             stats["empty_acc"], stats["geometry_l1"]), file=sys.stderr)
    if world > 1:
        for tensor in model.backbone.state_dict().values():
            torch.distributed.broadcast(tensor, 0)
    seed_everything(cfg["seed"])  # QA training starts from the same RNG state with or without pretraining
    return {"steps": int(cfg["pretrain_steps"]), **{k: round(float(v), 4) for k, v in stats.items()}}


def _train(cfg: dict, resume: bool, rank: int, world: int, device: torch.device) -> int:
    from stqa import __version__
    from stqa.checkpoint import load_checkpoint, save_checkpoint
    from stqa.data import tgifqa
    from stqa.data.dataset import QADataset, make_step_batch, training_schedule, video_groups
    from stqa.evaluate import evaluate_datasets
    from stqa.inference import model_from_checkpoint
    from stqa.progress import progress

    out = Path(cfg["out"])
    if rank == 0:
        ensure_synthetic(cfg)
    if world > 1:
        torch.distributed.barrier()
    tasks = task_list(cfg["task"], cfg["data"])
    last_dir = out / "last"
    if resume and not (last_dir / "config.json").is_file():
        raise SystemExit(f"error: --resume but {last_dir} has no checkpoint")
    if not resume and (last_dir / "config.json").is_file():
        raise SystemExit(f"error: {out} already holds a run; use --resume or another --out")

    # Records and the fixed validation split: one set of held-out GIF keys for all tasks (a GIF shared
    # by two tasks is never in one task's train and another's val), stored in the run dir.
    records = {task: tgifqa.load(cfg["data"], task, "train") for task in tasks}
    split_path = out / "val_split.json"
    if split_path.is_file():
        val_keys = tgifqa.load_split(split_path)
    else:
        all_keys = [r.key for task in tasks for r in records[task]]
        val_keys = tgifqa.validation_keys(all_keys, cfg["val_fraction"], cfg["seed"])
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            tgifqa.save_split(split_path, val_keys, seed=cfg["seed"], fraction=cfg["val_fraction"], tasks=tasks)
    train_records: dict[str, list] = {}
    val_records: dict[str, list] = {}
    for task in tasks:
        train_records[task], val_records[task] = tgifqa.apply_split(records[task], val_keys)
        if not train_records[task] or not val_records[task]:
            raise SystemExit(
                f"error: {task}: {len(train_records[task])} train / {len(val_records[task])} validation "
                f"items after the split; need at least one of each"
            )

    seed_everything(cfg["seed"])
    ckpt = None
    pretraining = None
    if resume:
        ckpt = load_checkpoint(last_dir, with_optimizer=True)
        model, word_vocab, answer_vocab, spec = model_from_checkpoint(ckpt, device)
        cfg_tasks = ckpt.config["model"]["tasks"]
        if sorted(cfg_tasks) != sorted(tasks):
            raise SystemExit(f"error: --resume: the run trains {cfg_tasks}, the data gives {tasks}")
        clips = make_clips(cfg, spec)
        pretraining = ckpt.config.get("backbone_pretraining")
    else:
        all_train = [r for t in tasks for r in train_records[t]]
        word_vocab = tgifqa.build_word_vocab(all_train)
        answer_vocab = tgifqa.build_answer_vocab(train_records["frameqa"]) if "frameqa" in tasks else None
        if cfg["features"]:
            clips = make_clips(cfg)
            spec = clips.spec
        else:
            from stqa.data.features import FeatureSpec
            from stqa.models.backbone import build_backbone

            channels = int(build_backbone(cfg["backbone"]).out_channels)
            spec = FeatureSpec(
                backbone=cfg["backbone"], channels=channels, num_frames=int(cfg["num_frames"]),
                policy=cfg["policy"], image_size=int(cfg["image_size"]),
            )
            clips = make_clips(cfg, spec)
        seed_everything(cfg["seed"])
        embeddings = load_glove(cfg["glove"], word_vocab, cfg["embed_dim"]) if cfg["glove"] else None
        model_cfg = ModelConfig(
            variant=cfg["variant"], tasks=tasks, vocab_size=len(word_vocab), feature_dim=int(spec.channels),
            num_answers=len(answer_vocab) if answer_vocab is not None else 0, embed_dim=cfg["embed_dim"],
            hidden_dim=cfg["hidden_dim"], att_hidden_dim=cfg["att_hidden_dim"], dropout=cfg["dropout"],
            backbone=cfg["backbone"], attention_impl=cfg["attention_impl"],
            freeze_embeddings=embeddings is not None, attended_position=bool(cfg["attended_position"]),
            question_gate=bool(cfg["question_gate"]),
        )
        model = STVQA(model_cfg, embeddings).to(device)
        if cfg["pretrain_steps"]:
            pretraining = _pretrain(cfg, model, train_records, out, rank, world, device)

    if cfg["freeze_backbone"]:
        from stqa.data.dataset import BackboneFeatureClips

        model.backbone.requires_grad_(False)
        clips = BackboneFeatureClips(clips, model.backbone, device)
    train_sets = {t: QADataset(train_records[t], t, word_vocab, answer_vocab, clips, cfg["max_question_len"]) for t in tasks}
    val_sets = {t: QADataset(val_records[t], t, word_vocab, answer_vocab, clips, cfg["max_question_len"]) for t in tasks}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        print(
            f"training {cfg['variant']} on {', '.join(f'{t} {len(train_sets[t])}/{len(val_sets[t])}' for t in tasks)}"
            f" (train/val) on {device} x{world}; {sum(p.numel() for p in model.parameters()):,} parameters",
            file=sys.stderr,
        )
    clips.preload([r for t in tasks for r in train_records[t] + val_records[t]],
                  desc="backbone features" if cfg["freeze_backbone"] else "decoding videos")

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg["lr"])
    start_epoch, best_score, step = 0, float("-inf"), 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer)
        state = ckpt.config["training"]
        start_epoch, best_score, step = state["epoch"] + 1, state["best_score"], state["step"]
        if ckpt.rng_state is not None:
            torch.set_rng_state(ckpt.rng_state)

    train_model: torch.nn.Module = MultiTaskStep(model)
    if world > 1:
        # find_unused_parameters: a rank's share of a step may lack a task, leaving that head unused.
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=len(tasks) > 1,
        )

    writer = None
    if cfg["tensorboard"] and rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise SystemExit(
                "error: --tensorboard needs the tensorboard package (pip install 'stqa[tensorboard]')"
            ) from err
        writer = SummaryWriter(cfg["tensorboard"])

    base_meta = {
        "name": cfg["name"] or out.name,
        "stqa_version": __version__,
        "model": model.config.to_dict(),
        "word_vocab": word_vocab.to_dict(),
        "answer_vocab": answer_vocab.to_dict() if answer_vocab is not None else None,
        "feature_spec": spec_dict(spec),
        "max_question_len": cfg["max_question_len"],
        "backbone_pretraining": pretraining,
    }
    groups = video_groups(train_sets)
    for epoch in range(start_epoch, cfg["epochs"]):
        t0 = time.time()
        model.train()
        if cfg["freeze_backbone"]:
            model.backbone.eval()  # fixed BatchNorm statistics too: the cached maps stay the model's maps
        schedule = training_schedule(groups, cfg["batch_size"], cfg["seed"], epoch, world)
        losses: dict[str, list[float]] = {t: [] for t in tasks}
        bar = progress(schedule, desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="step", disable=rank != 0,
                       leave=False)
        for keys in bar:
            batch = make_step_batch(train_sets, groups, keys[rank::world])
            inputs = {t: {k: v.to(device) for k, v in x.items()} for t, x in batch["inputs"].items()}
            clip_kw = {k: batch[k].to(device) for k in ("features", "frames") if k in batch}
            outputs = train_model(inputs, batch["frame_mask"].to(device), **clip_kw)
            task_losses = {t: task_loss(t, o.scores, batch["targets"][t].to(device)) for t, o in outputs.items()}
            loss = sum(task_losses.values())
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at epoch {epoch + 1}, step {step}: "
                                   f"{ {t: float(v.detach()) for t, v in task_losses.items()} }")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
            optimizer.step()
            step += 1
            for t, v in task_losses.items():
                losses[t].append(float(v.detach()))
                if writer is not None:
                    writer.add_scalar(f"train/loss_{t}", float(v.detach()), step)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        val_metrics = evaluate_datasets(
            model, val_sets, answer_vocab, cfg["eval_batch_size"], device, rank, world
        )["metrics"]
        train_loss = _mean_losses(losses, tasks, world, device)
        score = selection_score(val_metrics)
        improved = score > best_score
        best_score = max(best_score, score)
        summary = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "val": val_metrics,
            "val_score": score,
            "best_score": best_score,
            "seconds": round(time.time() - t0, 2),
        }
        if rank == 0:
            with open(out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(summary) + "\n")
            brief = ", ".join(
                f"{t} {m['mse']:.3f} mse" if t == "count" else f"{t} {100 * m['accuracy']:.1f}%"
                for t, m in val_metrics.items()
            )
            loss_txt = ", ".join(f"{t} {v:.3f}" for t, v in summary["train_loss"].items() if v is not None)
            print(
                f"epoch {epoch + 1}/{cfg['epochs']}: loss {loss_txt} | val {brief}"
                f"{' (best)' if improved else ''} [{summary['seconds']:.0f}s]",
                file=sys.stderr,
            )
            if writer is not None:
                for t, m in val_metrics.items():
                    writer.add_scalar(f"val/{t}", m["mse"] if t == "count" else m["accuracy"], step)
            training = {k: summary[k] for k in ("epoch", "step", "val", "val_score", "best_score")}
            training.update(seed=cfg["seed"], epochs=cfg["epochs"], world_size=world)
            meta = dict(base_meta, training=training)
            if improved:
                save_checkpoint(out / "best", model.state_dict(), meta)
            save_checkpoint(
                last_dir, model.state_dict(), meta, optimizer_state=optimizer.state_dict(),
                rng_state=torch.get_rng_state(),
            )
        if world > 1:
            torch.distributed.barrier()
    if writer is not None:
        writer.close()
    if rank == 0 and math.isfinite(best_score):
        print(f"best validation score {best_score:.4f}; checkpoint in {out / 'best'}", file=sys.stderr)
    return 0
