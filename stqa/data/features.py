"""HDF5 feature store: one dataset per TGIF GIF ``key`` holding its sampled frames' feature maps.

Layout (format ``stqa-features/1``):
  - dataset ``str(key)``: ``[t, 7, 7, C]`` float16 or float32, ``t <= num_frames`` real frames only
    (padding is never stored); attrs ``gif_name``, ``n_frames`` (frames decoded in total) and
    ``indices`` (which decoded frames were kept, from :func:`stqa.video.sampling.sample_indices`).
  - file attrs: ``format``, ``backbone``, ``weights_hash``, ``channels``, ``num_frames`` (T),
    ``policy``, ``image_size``, ``stqa_version``; with a motion stream (``stqa extract --motion``) also
    ``motion_backbone``, ``motion_channels`` (the last C channels of every map) and ``motion_weights_hash``.

A dataset counts as written only once its ``n_frames`` attribute exists (it is set after the data),
so a run killed mid-write leaves nothing that looks complete; the writer redoes such keys.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from stqa.checkpoint import MOTION_SPEC_FIELDS, SPEC_FIELDS, FeatureSpec, spec_differences

FORMAT = "stqa-features/1"
GRID = 7  # spatial size of every stored map


def _spec_from_attrs(attrs, path) -> FeatureSpec:
    if attrs.get("format") != FORMAT:
        raise ValueError(f"{path}: not a stqa feature file (format attribute {attrs.get('format')!r}, "
                         f"expected {FORMAT!r})")
    present = [k for k in SPEC_FIELDS + MOTION_SPEC_FIELDS if k in attrs]  # motion: only in motion stores
    return FeatureSpec.from_dict({k: _plain(attrs[k]) for k in present})


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


class FeatureStore:
    """Read-only access to a feature file.

    The HDF5 handle is opened on first data access in each process and never pickled, so a store
    can be handed to DataLoader workers (h5py handles must not cross ``fork``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"feature file not found: {self.path}")
        with h5py.File(self.path, "r") as f:
            self.spec = _spec_from_attrs(f.attrs, self.path)
            self.weights_hash = str(_plain(f.attrs.get("weights_hash", "")))
            self.motion_weights_hash = str(_plain(f.attrs.get("motion_weights_hash", ""))) or None
            self.stqa_version = str(_plain(f.attrs.get("stqa_version", "")))
            self._keys = sorted(int(k) for k, d in f.items() if "n_frames" in d.attrs)
        self._key_set = frozenset(self._keys)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def keys(self) -> list[int]:
        """GIF keys with complete features, ascending."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        try:
            return int(key) in self._key_set  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def _dataset(self, key: int) -> h5py.Dataset:
        if int(key) not in self._key_set:
            raise KeyError(f"no features for GIF key {key} in {self.path}")
        return self._handle()[str(int(key))]

    def __getitem__(self, key: int) -> np.ndarray:
        """Feature maps ``[t, 7, 7, C]`` of the real frames (stored dtype)."""
        return self._dataset(key)[()]

    def info(self, key: int) -> dict:
        """``gif_name``, ``n_frames``, ``indices`` and ``length`` (= t) of one GIF's entry."""
        d = self._dataset(key)
        return {"gif_name": str(_plain(d.attrs["gif_name"])), "n_frames": int(d.attrs["n_frames"]),
                "indices": np.asarray(d.attrs["indices"], dtype=np.int64), "length": int(d.shape[0])}


class FeatureWriter:
    """Appends datasets to a feature file; refuses a file written with another spec or weights."""

    def __init__(self, path: str | os.PathLike, spec: FeatureSpec, weights_hash: str | None,
                 dtype: str = "float32", motion_weights_hash: str | None = None):
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
        from stqa import __version__  # a lazy attribute: it loads the compiled extension

        self.path = Path(path)
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.weights_hash = weights_hash or "none"
        self.motion_weights_hash = motion_weights_hash if spec.motion_backbone else None
        existed = self.path.exists()
        self._file = h5py.File(self.path, "a")
        try:
            if existed and len(self._file.attrs):
                self._check_compatible()
            else:
                attrs = self._file.attrs
                attrs["format"] = FORMAT
                for k, v in spec.to_dict().items():
                    if k not in MOTION_SPEC_FIELDS or spec.motion_backbone:  # HDF5 has no None
                        attrs[k] = v
                attrs["weights_hash"] = self.weights_hash
                if self.motion_weights_hash:
                    attrs["motion_weights_hash"] = self.motion_weights_hash
                attrs["dtype"] = dtype
                attrs["stqa_version"] = __version__
            # Entries without the completion marker are leftovers of an interrupted run.
            for name in [k for k, d in self._file.items() if "n_frames" not in d.attrs]:
                del self._file[name]
        except BaseException:
            self._file.close()
            raise

    def _check_compatible(self) -> None:
        attrs = self._file.attrs
        existing = _spec_from_attrs(attrs, self.path)
        problems = [f"{name}: {old!r} != {new!r}" for name, old, new in spec_differences(existing, self.spec)]
        old_hash = str(_plain(attrs.get("weights_hash", "none")))
        if old_hash != self.weights_hash:
            problems.append(f"weights_hash: {old_hash!r} != {self.weights_hash!r}")
        old_motion_hash = str(_plain(attrs.get("motion_weights_hash", ""))) or None
        if old_motion_hash != self.motion_weights_hash:
            problems.append(f"motion_weights_hash: {old_motion_hash!r} != {self.motion_weights_hash!r}")
        old_dtype = str(_plain(attrs.get("dtype", "")))
        if old_dtype != str(self.dtype):
            problems.append(f"dtype: {old_dtype!r} != {str(self.dtype)!r}")
        if problems:
            raise ValueError(f"{self.path} was written with different settings; refusing to append "
                             f"(file vs this run: {'; '.join(problems)}). Use another --out or delete it.")

    def done_keys(self) -> set[int]:
        return {int(k) for k, d in self._file.items() if "n_frames" in d.attrs}

    def write(self, key: int, features: np.ndarray, *, gif_name: str, n_frames: int,
              indices: np.ndarray) -> None:
        """Store one GIF's maps ``[t, 7, 7, C]`` (t = len(indices) real frames)."""
        features = np.asarray(features)
        t = len(indices)
        expected = (t, GRID, GRID, self.spec.channels)
        if features.shape != expected:
            raise ValueError(f"key {key}: features have shape {features.shape}, expected {expected}")
        if not 1 <= t <= self.spec.num_frames:
            raise ValueError(f"key {key}: {t} frames, expected 1..{self.spec.num_frames}")
        data = features.astype(self.dtype, copy=False)
        if not np.isfinite(data).all():  # also catches float16 overflow
            raise ValueError(f"key {key}: features contain NaN or inf (as {self.dtype})")
        name = str(int(key))
        if name in self._file:
            del self._file[name]
        d = self._file.create_dataset(name, data=data)
        d.attrs["gif_name"] = gif_name
        d.attrs["indices"] = np.asarray(indices, dtype=np.int64)
        d.attrs["n_frames"] = int(n_frames)  # completion marker: written last

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
