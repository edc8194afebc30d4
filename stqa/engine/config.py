"""The options of ``stqa train``: :class:`TrainConfig`, the named presets, the flags, and their resolution.

Config precedence: built-in defaults < ``--preset`` < ``--config FILE`` (JSON or TOML) < explicit CLI
flags. :meth:`TrainConfig.validate` is the one place that checks a resolved config; its errors are one
line each (``SystemExit("error: ...")``, which :mod:`stqa.cli` prints as ``stqa train: error: ...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from stqa import tasks
from stqa.engine import recipe
from stqa.models.stvqa import SPATIAL_VARIANTS, VARIANTS


@dataclass
class TrainConfig:
    """A resolved training config; written as the run directory's ``config.json`` (:meth:`to_dict`)."""

    task: str = "all"
    variant: str = "sptp"
    data: str | None = None
    features: str | None = None
    videos: str | None = None
    backbone: str | None = None
    out: str | None = None
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 64
    lr: float = 1e-3
    grad_clip: float = 5.0
    dropout: float = 0.2
    embed_dim: int = 300
    hidden_dim: int = 512
    att_hidden_dim: int = 512
    glove: str | None = None
    num_frames: int = 35
    image_size: int = 112
    policy: str = "uniform"
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    attention_impl: str = "fused"
    max_question_len: int = 35
    tensorboard: str | None = None
    name: str | None = None
    synth_videos: int = 0
    synth_seed: int = 0
    pretrain_steps: int = 0
    freeze_backbone: bool = False
    attended_position: bool = False
    question_gate: bool = False
    # Set by --preset tgifqa-stvqa: the run is checked against the paper's recipe (stqa.engine.recipe).
    recipe: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, dry_run: bool = False) -> TrainConfig:
        """Check the options against each other (before any data is loaded); returns ``self``.

        ``dry_run`` (``stqa train --dry-run``) builds the split and vocabularies only, so it needs only
        ``--data``: the output and clip-source checks are skipped.
        """
        if not self.data:
            raise SystemExit("error: --data is required (or --preset)")
        try:
            tasks.parse_task_list(str(self.task))
        except ValueError as err:
            raise SystemExit(f"error: --task: {err}") from err
        if self.recipe is not None and self.recipe != recipe.NAME:
            raise SystemExit(f"error: unknown recipe {self.recipe!r} (known: {recipe.NAME})")
        if self.recipe:
            recipe.check_task(self)
        if dry_run:
            return self
        if self.recipe:
            recipe.check_config(self)
        if not self.out:
            raise SystemExit("error: --out is required")
        if bool(self.features) == bool(self.videos):
            raise SystemExit("error: give exactly one of --features (HDF5 store) or --videos (with --backbone)")
        if self.videos and not self.backbone:
            raise SystemExit("error: --videos needs --backbone (e.g. tiny) to turn frames into features")
        if self.features and self.backbone:
            raise SystemExit("error: --backbone is for end-to-end training on --videos, not with --features")
        if (self.pretrain_steps or self.freeze_backbone) and not self.backbone:
            raise SystemExit("error: --pretrain-steps and --freeze-backbone need a backbone (--videos with --backbone)")
        # Checked here too (ModelConfig checks it again) so the error comes before any data is loaded.
        for option in ("attended_position", "question_gate"):
            if getattr(self, option) and self.variant not in SPATIAL_VARIANTS:
                flag = "--" + option.replace("_", "-")
                raise SystemExit(f"error: {flag} needs spatial attention (--variant sp or sptp), not {self.variant}")
        if int(self.pretrain_steps) < 0:
            raise SystemExit(f"error: --pretrain-steps must be >= 0, got {self.pretrain_steps}")
        return self


#: Every option's name (the keys of a config file and of the run's config.json).
OPTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))

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
    # The paper's setup as far as the official code shows it (docs/fidelity.md, "The paper's recipe"): one
    # task, sptp, frozen GloVe, appearance + motion features; the store and options are checked.
    recipe.NAME: dict(recipe.VALUES),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stqa train`` (every default is None so the config file and preset can fill it)."""
    a = parser.add_argument
    a("--task", type=_task_argument,
      help="task to train, a comma-separated list (count,action), or all (one head per task; default all)")
    a("--variant", choices=VARIANTS, help="model variant (default sptp)")
    a("--data", help="directory with the TGIF-QA Train_/Test_*_question.csv files")
    a("--features", help="HDF5 feature store (stqa extract); or use --videos with --backbone")
    a("--videos", help="directory of <gif_name>.gif videos, decoded and fed to --backbone end to end")
    a("--backbone", help="backbone trained end to end on frames (with --videos), e.g. tiny")
    a("--out", help="run directory (checkpoints, split, logs)")
    a("--config", help="JSON or TOML file with any of these options (CLI flags override it)")
    a("--preset", choices=sorted(PRESETS),
      help="a named recipe; 'synthetic' trains the bundled model, 'tgifqa-stvqa' is the paper's setup (one "
           "--task, --glove, --features with resnet152 + motion, T=35; docs/fidelity.md)")
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
    a("--generate", action="store_true",
      help="with --preset synthetic: generate its set in --data first if it is not there (24,000 videos, "
           "minutes); without this flag a missing --data is an error that names the stqa synth command")
    a("--dry-run", action="store_true",
      help="build the split (test GIFs dropped) and the vocabularies, print a per-task summary, train nothing; "
           "needs only --data (with --out, split.json and vocab.json are written there)")


def _task_argument(text: str) -> str:
    """``--task``: ``all`` or task names, normalised to canonical order (``action,count`` -> ``count,action``)."""
    if text.strip() == "all":
        return "all"
    try:
        return ",".join(tasks.parse_task_list(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


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
    unknown = sorted(set(data) - set(OPTIONS))
    if unknown:
        raise SystemExit(f"error: unknown option(s) in {p}: {', '.join(unknown)}")
    return data


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < preset < config file < explicit flags, validated (for a dry run with ``--dry-run``)."""
    values: dict = {}
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else {}
    values.update(preset)
    if getattr(args, "config", None):
        values.update(_read_config_file(args.config))
    for key in OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    # A preset's videos folder lies inside its data folder: another --data brings its own videos along
    # (unless the videos were given too), so `--preset synthetic --data other` never mixes two sets.
    if preset.get("videos") and values.get("videos") == preset["videos"] and values.get("data") != preset["data"]:
        inside = Path(preset["videos"]).relative_to(preset["data"])
        values["videos"] = str(Path(values["data"]) / inside)
    return TrainConfig(**values).validate(dry_run=bool(getattr(args, "dry_run", False)))
