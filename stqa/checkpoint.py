"""Self-describing checkpoints: a directory with safetensors weights and JSON metadata, never pickle.

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

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "stqa-checkpoint"
FORMAT_VERSION = 1
SPEC_FIELDS = ("backbone", "channels", "num_frames", "policy", "image_size")


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
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        meta = dict(config)
        meta["format"] = FORMAT
        meta["format_version"] = FORMAT_VERSION
        meta["weights_sha256"] = file_sha256(tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if optimizer_state is not None:
            tensors, opt_meta = _optimizer_to_flat(optimizer_state)
            if rng_state is not None:
                tensors["rng.torch"] = rng_state.detach().cpu().contiguous()
            save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"format": FORMAT})
            (tmp / "optimizer.json").write_text(json.dumps(opt_meta, indent=2) + "\n")
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


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or a training run directory (its ``best/`` checkpoint)."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    if (path / "best" / "config.json").is_file():
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
        config = json.loads((directory / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{directory / 'config.json'} is unreadable or not valid JSON: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{directory / 'config.json'} is not an {FORMAT} config (format field missing)")
    if int(config.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {config.get('format_version')} is newer than this stqa supports "
            f"({FORMAT_VERSION})"
        )
    weights_path = directory / "model.safetensors"
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
        opt_path = directory / "optimizer.safetensors"
        if not opt_path.is_file():
            raise CheckpointError(f"{directory} has no optimizer state (optimizer.safetensors) to resume from")
        try:
            tensors = load_file(str(opt_path))
            opt_meta = json.loads((directory / "optimizer.json").read_text())
            ckpt.rng_state = tensors.pop("rng.torch", None)
            ckpt.optimizer = _optimizer_from_flat(tensors, opt_meta)
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"optimizer state in {directory} is unreadable: {err}") from err
    return ckpt


def check_spec(checkpoint_spec: dict, data_spec: dict, what: str = "the data") -> None:
    """Fail with a message naming every field where the checkpoint's feature spec and the data's differ."""
    diffs = [
        f"{name}: checkpoint {checkpoint_spec.get(name)!r} vs {what} {data_spec.get(name)!r}"
        for name in SPEC_FIELDS
        if name in checkpoint_spec and name in data_spec and checkpoint_spec.get(name) != data_spec.get(name)
    ]
    if diffs:
        raise CheckpointError("feature spec mismatch (" + "; ".join(diffs) + ")")
