"""Self-describing checkpoints: a directory with safetensors weights and JSON metadata, never pickle.

This module owns the checkpoint layout (the file names below, :data:`BUNDLED_MODEL`) and the feature
spec a checkpoint records and must match (:class:`FeatureSpec`, :func:`check_spec`); other modules ask
it (:func:`is_checkpoint`, :func:`read_config`) instead of naming the files.

Layout of a checkpoint directory::

    model.safetensors      the model's state dict
    config.json            format/version, model config, vocabularies, feature spec, training summary
    optimizer.safetensors  (optional, for --resume) optimizer tensors + torch RNG state
    optimizer.json         (optional) optimizer param groups and the tensor-key layout

Writes are atomic: everything goes to a fresh temporary directory next to the target, which then
replaces the target with ``os.replace`` (the old one is moved aside first and deleted after), so a
failed or interrupted save leaves the previous checkpoint untouched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "stqa-checkpoint"
FORMAT_VERSION = 1
SPEC_FIELDS = ("backbone", "channels", "num_frames", "policy", "image_size")
#: Spec fields of the optional motion stream: absent in specs written before it (= appearance only).
MOTION_SPEC_FIELDS = ("motion_backbone", "motion_channels")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META_FILE = "optimizer.json"
#: The bundled default model, shipped in the package (``make model`` writes it).
BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "default"


@dataclass(frozen=True)
class FeatureSpec:
    """What a clip's features are (backbone, channels, T, sampling policy, input size): a feature file
    and a checkpoint both record it, and a checkpoint must match the data it reads."""

    backbone: str
    channels: int
    num_frames: int
    policy: str
    image_size: int
    # The motion stream (stqa extract --motion): its backbone and how many of the ``channels`` it holds
    # (the last ``motion_channels``; appearance comes first). None / 0: appearance only.
    motion_backbone: str | None = None
    motion_channels: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def appearance_channels(self) -> int:
        return int(self.channels) - int(self.motion_channels)

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureSpec:
        missing = [f for f in SPEC_FIELDS if f not in data]
        if missing:
            raise ValueError(f"feature spec is missing {missing}")
        motion = data.get("motion_backbone") or None
        motion_channels = int(data.get("motion_channels") or 0)
        if bool(motion) != bool(motion_channels):
            raise ValueError(f"feature spec: motion_backbone {motion!r} with motion_channels {motion_channels}")
        return cls(backbone=str(data["backbone"]), channels=int(data["channels"]),
                   num_frames=int(data["num_frames"]), policy=str(data["policy"]),
                   image_size=int(data["image_size"]), motion_backbone=None if motion is None else str(motion),
                   motion_channels=motion_channels)


def spec_differences(a: FeatureSpec | Mapping, b: FeatureSpec | Mapping) -> list[tuple[str, Any, Any]]:
    """``(field, a's value, b's value)`` for every spec field present in both that differs: the one
    comparison of feature specs (checkpoint vs data, feature file vs extraction run)."""
    # Through from_dict, so a spec written before the motion fields existed reads as appearance only.
    mine = (a if isinstance(a, FeatureSpec) else FeatureSpec.from_dict(a)).to_dict()
    theirs = (b if isinstance(b, FeatureSpec) else FeatureSpec.from_dict(b)).to_dict()
    return [(name, mine[name], theirs[name]) for name in SPEC_FIELDS + MOTION_SPEC_FIELDS
            if mine[name] != theirs[name]]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, or does not fit the data it is used with."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the metadata plus the weights (and optimizer state if requested)."""

    path: Path
    config: dict
    state_dict: dict[str, torch.Tensor]
    weights_sha256: str
    optimizer: dict | None = None
    rng_state: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def model_version(self) -> str:
        return f"{self.name}-{self.weights_sha256[:12]}"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (weights provenance and corruption checks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _optimizer_to_flat(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and the JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, str]] = {}
    for pid, entries in state["state"].items():
        layout[str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                key = f"state.{pid}.{name}"
                tensors[key] = value.detach().cpu().contiguous()
                layout[str(pid)][name] = "tensor"
            else:
                layout[str(pid)][name] = json.dumps(value)
    return tensors, {"param_groups": state["param_groups"], "layout": layout}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for pid, entries in meta["layout"].items():
        state[int(pid)] = {
            name: tensors[f"state.{pid}.{name}"] if kind == "tensor" else json.loads(kind)
            for name, kind in entries.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    optimizer_state: dict | None = None,
    rng_state: torch.Tensor | None = None,
) -> Path:
    """Write a checkpoint directory atomically; returns its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        meta = dict(config)
        meta["format"] = FORMAT
        meta["format_version"] = FORMAT_VERSION
        meta["weights_sha256"] = file_sha256(tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if optimizer_state is not None:
            tensors, opt_meta = _optimizer_to_flat(optimizer_state)
            if rng_state is not None:
                tensors["rng.torch"] = rng_state.detach().cpu().contiguous()
            save_file(tensors, str(tmp / OPTIMIZER_FILE), metadata={"format": FORMAT})
            (tmp / OPTIMIZER_META_FILE).write_text(json.dumps(opt_meta, indent=2) + "\n")
        for f in tmp.iterdir():
            os.chmod(f, 0o644)  # mkstemp-style 0600 would hide the weights from a server running as another user
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        old = None
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old / "ckpt")
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def is_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds a checkpoint's metadata (a finished save writes it with the weights)."""
    return (Path(directory) / CONFIG_FILE).is_file()


def read_config(directory: str | Path) -> dict:
    """A checkpoint's metadata (``config.json``) without loading or checking the weights: a cheap peek,
    e.g. at which backbone it trained. Raises OSError or ValueError when unreadable."""
    return json.loads((Path(directory) / CONFIG_FILE).read_text())


def config_path(directory: str | Path) -> Path:
    """Where a checkpoint's metadata lives, for messages about it."""
    return Path(directory) / CONFIG_FILE


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or a training run directory (its ``best/`` checkpoint)."""
    path = Path(path)
    if is_checkpoint(path) and (path / WEIGHTS_FILE).is_file():
        return path
    if is_checkpoint(path / "best"):
        return path / "best"
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(
        f"{path} is not a checkpoint: expected config.json and model.safetensors (or a run dir with best/)"
    )


def load_checkpoint(path: str | Path, with_optimizer: bool = False) -> Checkpoint:
    """Read a checkpoint directory (no code is ever unpickled). Raises :class:`CheckpointError`."""
    directory = resolve_checkpoint_dir(path)
    try:
        config = read_config(directory)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path(directory)} is unreadable or not valid JSON: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path(directory)} is not an {FORMAT} config (format field missing)")
    if int(config.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {config.get('format_version')} is newer than this stqa supports "
            f"({FORMAT_VERSION})"
        )
    weights_path = directory / WEIGHTS_FILE
    sha = file_sha256(weights_path)
    expected = config.get("weights_sha256")
    if expected and expected != sha:
        raise CheckpointError(
            f"{weights_path} is corrupted: sha256 {sha[:12]}… does not match config.json ({expected[:12]}…)"
        )
    try:
        state_dict = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {err}") from err
    ckpt = Checkpoint(path=directory, config=config, state_dict=state_dict, weights_sha256=sha)
    if with_optimizer:
        opt_path = directory / OPTIMIZER_FILE
        if not opt_path.is_file():
            raise CheckpointError(f"{directory} has no optimizer state (optimizer.safetensors) to resume from")
        try:
            tensors = load_file(str(opt_path))
            opt_meta = json.loads((directory / OPTIMIZER_META_FILE).read_text())
            ckpt.rng_state = tensors.pop("rng.torch", None)
            ckpt.optimizer = _optimizer_from_flat(tensors, opt_meta)
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"optimizer state in {directory} is unreadable: {err}") from err
    return ckpt


def check_spec(checkpoint_spec: FeatureSpec | Mapping, data_spec: FeatureSpec | Mapping,
               what: str = "the data") -> None:
    """Fail with a message naming every field where the checkpoint's feature spec and the data's differ."""
    diffs = [f"{name}: checkpoint {mine!r} vs {what} {theirs!r}"
             for name, mine, theirs in spec_differences(checkpoint_spec, data_spec)]
    if diffs:
        raise CheckpointError("feature spec mismatch (" + "; ".join(diffs) + ")")


# -- the GIF keys a run saw --------------------------------------------------------------------------
KEY_SET_ENCODING = "sorted-delta-varint-zlib-base64"


def encode_key_set(keys) -> dict:
    """A set of non-negative GIF keys, compactly: sorted, as deltas, LEB128 varints, zlib, base64.

    A TGIF-QA run sees ~50k keys; as a JSON list of integers that is several hundred KB of config.json,
    as deltas of sorted keys most take one or two bytes before compression.
    """
    values = sorted({int(k) for k in keys})
    if values and values[0] < 0:
        raise ValueError(f"GIF keys must be >= 0, got {values[0]}")
    raw = bytearray()
    previous = 0
    for value in values:
        delta, previous = value - previous, value
        while True:
            byte = delta & 0x7F
            delta >>= 7
            raw.append(byte | (0x80 if delta else 0))
            if not delta:
                break
    return {"encoding": KEY_SET_ENCODING, "count": len(values),
            "data": base64.b64encode(zlib.compress(bytes(raw), 9)).decode("ascii")}


def decode_key_set(payload: Mapping) -> frozenset[int]:
    """The keys :func:`encode_key_set` wrote; ValueError when the record is not one or is damaged."""
    if not isinstance(payload, Mapping) or payload.get("encoding") != KEY_SET_ENCODING:
        raise ValueError(f"not a {KEY_SET_ENCODING} key set")
    try:
        raw = zlib.decompress(base64.b64decode(str(payload["data"]), validate=True))
    except (KeyError, ValueError, zlib.error) as err:
        raise ValueError(f"damaged key set ({err})") from None
    values: list[int] = []
    current = shift = delta = 0
    for byte in raw:
        delta |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            current += delta
            values.append(current)
            delta = shift = 0
    if shift or len(values) != int(payload.get("count", -1)):
        raise ValueError(f"damaged key set: {len(values)} keys decoded, {payload.get('count')} recorded")
    return frozenset(values)
