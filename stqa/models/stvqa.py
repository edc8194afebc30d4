"""ST-VQA (Jang et al., CVPR 2017): spatio-temporal attention video QA with one head per TGIF-QA task.

Variants (``ModelConfig.variant``):
  - ``concat``: no attention; frame features are mean-pooled over the 7x7 grid, the answer is read from
    the final text-LSTM state;
  - ``sp``: spatial attention over the 49 cells of every frame (query: a text-only pass), no temporal
    attention;
  - ``tp``: mean-pooled frames, temporal attention over the video-LSTM memory;
  - ``sptp``: both.

Encoders: a 2-layer video LSTM runs first, its final (h, c) of both layers initialises a 2-layer text
LSTM with separate weights. The "state" used downstream is the concatenation of both layers' hidden
states (2H). Padded frames and tokens never touch the state: both LSTMs read packed sequences, the
attention modules get the masks. Deviations from the official TensorFlow code are listed in
docs/fidelity.md.

One model serves several tasks: backbone (optional), embeddings, encoders and attention are shared,
each task present has its own head and loss, chosen by its :class:`stqa.tasks.TaskSpec` (``head``:
candidate scorer, regression or classifier; ``loss``: hinge, MSE or cross-entropy) from :data:`HEADS`
and :data:`LOSSES`. Frames become features in :mod:`stqa.models.encode`, the one encoding stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stqa import tasks as task_registry
from stqa.models.backbone import build_backbone
from stqa.models.encode import encode_frames
from stqa.nn import SpatialAttention, TemporalAttention

VARIANTS: tuple[str, ...] = ("concat", "sp", "tp", "sptp")
SPATIAL_VARIANTS: tuple[str, ...] = ("sp", "sptp")
GRID = 7  # feature maps are GRID x GRID cells


@dataclass
class ModelConfig:
    """Everything needed to rebuild an :class:`STVQA` (saved in every checkpoint's config.json)."""

    variant: str
    tasks: list[str]
    vocab_size: int
    feature_dim: int
    num_answers: int = 0  # FrameQA classes (train answers incl. <pad>/<unk> slots); 0 without frameqa
    embed_dim: int = 300
    hidden_dim: int = 512  # per LSTM layer; the state is 2 * hidden_dim
    att_hidden_dim: int = 512
    dropout: float = 0.2
    backbone: str | None = None  # None: precomputed features; "tiny": trained end to end from frames
    attention_impl: str = "fused"
    freeze_embeddings: bool = False
    # Append where spatial attention looked (the attention-weighted row and column of the cells, in
    # [-1, 1]) to the video LSTM's input: the pooled features alone do not say where they came from
    # (not in the paper; see docs/fidelity.md).
    attended_position: bool = False
    # Scale each channel of the video LSTM's input by a sigmoid gate computed from the text-only pass, so
    # the question picks which properties of the attended shape the video LSTM follows (not in the paper;
    # see docs/fidelity.md).
    question_gate: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        unknown = [t for t in self.tasks if t not in task_registry.TASKS]
        if not self.tasks or unknown:
            raise ValueError(f"tasks must be a non-empty subset of {', '.join(task_registry.TASK_NAMES)}, "
                             f"got {self.tasks!r}")
        for task in self.tasks:
            if task_registry.get(task).head == "classifier" and self.num_answers < 3:
                raise ValueError(f"a {task} head needs num_answers >= 3 (the answer vocabulary incl. specials)")
        for name in ("vocab_size", "feature_dim", "embed_dim", "hidden_dim", "att_hidden_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attended_position and not self.spatial:
            raise ValueError(f"attended_position needs spatial attention (variant sp or sptp), not {self.variant!r}")
        if self.question_gate and not self.spatial:
            raise ValueError(f"question_gate needs spatial attention (variant sp or sptp), not {self.variant!r}")

    @property
    def spatial(self) -> bool:
        return self.variant in SPATIAL_VARIANTS

    @property
    def temporal(self) -> bool:
        return self.variant in ("tp", "sptp")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass
class ModelOutput:
    """Scores for one task batch plus the attention maps (None where the variant has none).

    ``scores``: [B, 5] (multiple choice), [B] (count regression) or [B, A] (frameqa logits).
    ``temporal_attention``: [B, T] ([B, 5, T] for multiple choice). ``spatial_attention``: [B, T, 49]
    ([B, 5, T, 49] for multiple choice).
    """

    scores: torch.Tensor
    temporal_attention: torch.Tensor | None = None
    spatial_attention: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


class _StackedLSTM(nn.Module):
    """Two (or more) single-layer LSTMs so every layer's per-step hidden state is available.

    Reads packed sequences: steps past a sequence's length neither change its state nor produce output.
    """

    def __init__(self, input_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.LSTM(d, hidden_dim, batch_first=True) for d in dims)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
        state: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        return_outputs: bool = False,
    ) -> tuple[torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``inputs`` [N, L, D], ``lengths`` [N] (>= 1). Returns (per-step concat of all layers' h
        [N, L, layers*H] or None, final (h, c) per layer, each [N, H])."""
        total = inputs.shape[1]
        lengths_cpu = lengths.detach().to("cpu", torch.int64)
        if inputs.device.type == "cpu" and torch.backends.mkldnn.enabled:
            # oneDNN's LSTM is ~10x slower than ATen's on packed sequences (forward and backward);
            # the choice is made at forward time, so the backward follows it.
            torch.backends.mkldnn.enabled = False
            try:
                return self.forward(inputs, lengths, state, return_outputs)
            finally:
                torch.backends.mkldnn.enabled = True
        x = inputs
        finals: list[tuple[torch.Tensor, torch.Tensor]] = []
        outputs: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
            hx = None
            if state is not None:
                h0, c0 = state[i]
                hx = (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous())
            out, (h, c) = layer(packed, hx)
            x, _ = pad_packed_sequence(out, batch_first=True, total_length=total)
            finals.append((h.squeeze(0), c.squeeze(0)))
            if return_outputs:
                outputs.append(x)
        per_step = torch.cat(outputs, dim=-1) if return_outputs else None
        return per_step, finals


def _state_vector(finals: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The ST-VQA "state": hidden (not cell) states of all layers, concatenated."""
    return torch.cat([h for h, _ in finals], dim=-1)


class STVQA(nn.Module):
    """ST-VQA with task heads; see the module docstring."""

    NUM_LAYERS = 2

    def __init__(self, config: ModelConfig, embeddings: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        h2 = self.NUM_LAYERS * config.hidden_dim
        self.backbone: nn.Module | None = None
        if config.backbone is not None:
            # Channels-last activations run the CPU (oneDNN) convolutions ~4x faster, GPU ones no slower.
            self.backbone = build_backbone(config.backbone).to(memory_format=torch.channels_last)
            if int(self.backbone.out_channels) != config.feature_dim:
                raise ValueError(
                    f"backbone {config.backbone!r} gives {self.backbone.out_channels} channels but "
                    f"feature_dim is {config.feature_dim}"
                )
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        if embeddings is not None:
            if tuple(embeddings.shape) != (config.vocab_size, config.embed_dim):
                raise ValueError(
                    f"embedding matrix has shape {tuple(embeddings.shape)}, expected "
                    f"({config.vocab_size}, {config.embed_dim})"
                )
            with torch.no_grad():
                self.embedding.weight.copy_(embeddings)
        self.embedding.weight.requires_grad_(not config.freeze_embeddings)
        video_dim = config.feature_dim + (2 if config.attended_position else 0)
        self.video_lstm = _StackedLSTM(video_dim, config.hidden_dim, self.NUM_LAYERS, config.dropout)
        self.text_lstm = _StackedLSTM(config.embed_dim, config.hidden_dim, self.NUM_LAYERS, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.spatial_attention: SpatialAttention | None = None
        self.temporal_attention: TemporalAttention | None = None
        coords = None
        if config.attended_position:
            axis = torch.linspace(-1.0, 1.0, GRID)
            rows, cols = torch.meshgrid(axis, axis, indexing="ij")
            coords = torch.stack([rows, cols], -1).reshape(GRID * GRID, 2)
        self.register_buffer("cell_coords", coords, persistent=False)
        self.question_gate = nn.Linear(h2, video_dim) if config.question_gate else None
        if config.spatial:
            self.spatial_attention = SpatialAttention(
                config.feature_dim, h2, hidden_dim=config.att_hidden_dim, impl=config.attention_impl
            )
        if config.temporal:
            self.temporal_attention = TemporalAttention(
                h2, h2, hidden_dim=config.att_hidden_dim, impl=config.attention_impl
            )
            self.context_proj = nn.Linear(h2, h2)
        self.heads = nn.ModuleDict(
            {task: HEADS[task_registry.get(task).head].build(config, h2) for task in config.tasks}
        )

    def forward(
        self,
        task: str,
        tokens: torch.Tensor,
        token_lengths: torch.Tensor,
        frame_mask: torch.Tensor,
        features: torch.Tensor | None = None,
        frames: torch.Tensor | None = None,
        clip_index: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Score one single-task batch.

        ``tokens`` [B, L] ([B, 5, L] for action/transition: "question + candidate" per candidate),
        ``token_lengths`` [B] ([B, 5]), all >= 1; ``frame_mask`` [V, T] bool (True = real frame, at
        least one per clip); exactly one of ``features`` [V, T, 7, 7, C] or ``frames`` [V, T, 3, S, S].
        ``clip_index`` [B] says which clip each question is about (default: question i <-> clip i, V = B).
        """
        if task not in self.heads:
            raise ValueError(f"task {task!r} is not served by this model (tasks: {', '.join(self.heads)})")
        if (features is None) == (frames is None):
            raise ValueError("give exactly one of features or frames")
        if frames is not None:
            features = encode_frames(self.backbone, frames, frame_mask)
        assert features is not None
        if features.dim() != 5 or features.shape[-1] != self.config.feature_dim:
            raise ValueError(
                f"features must be [B, T, 7, 7, {self.config.feature_dim}], got {tuple(features.shape)}"
            )
        if frame_mask.shape != features.shape[:2]:
            raise ValueError(f"frame_mask {tuple(frame_mask.shape)} does not match the clips {tuple(features.shape[:2])}")
        if bool((frame_mask.sum(1) < 1).any()):
            raise ValueError("every clip needs at least one real frame")
        t = features.shape[1]
        rows = clip_index if clip_index is not None else torch.arange(features.shape[0], device=features.device)
        b = rows.shape[0]
        spec = task_registry.get(task)
        mc = spec.multiple_choice
        if mc:
            if tokens.dim() != 3 or tokens.shape[1] != spec.num_candidates:
                raise ValueError(f"{task} needs tokens [B, {spec.num_candidates}, L], got {tuple(tokens.shape)}")
            k = spec.num_candidates
            tokens = tokens.reshape(b * k, -1)
            token_lengths = token_lengths.reshape(b * k)
            # The five (video, question+candidate) pairs are independent sequences (an "aggregated" 5B batch).
            rows = rows.repeat_interleave(k)
        else:
            k = 1
        if tokens.shape[0] != rows.shape[0]:
            raise ValueError(f"batch size mismatch: {tokens.shape[0] // k} questions for {rows.shape[0] // k} clips")
        if bool((token_lengths < 1).any()):
            raise ValueError("every question needs at least one token")
        embedded = self.dropout(self.embedding(tokens))

        spatial_w = None
        if self.spatial_attention is not None:
            # The spatial query comes from the text, so each (question, candidate) reads its own video pass.
            if self.cell_coords is not None and tuple(features.shape[2:4]) != (GRID, GRID):
                raise ValueError(f"attended_position needs {GRID}x{GRID} feature maps, got {tuple(features.shape[2:4])}")
            features, frame_mask = features[rows], frame_mask[rows]
            _, text_only = self.text_lstm(embedded, token_lengths)
            query = _state_vector(text_only)
            video_in, spatial_w = self.spatial_attention(features, query, frame_mask)
            if self.cell_coords is not None:
                video_in = torch.cat([video_in, spatial_w @ self.cell_coords.to(spatial_w.dtype)], -1)
            if self.question_gate is not None:
                video_in = video_in * torch.sigmoid(self.question_gate(query)).unsqueeze(1)
            memory, video_final = self.video_lstm(
                self.dropout(video_in), frame_mask.sum(1), return_outputs=self.config.temporal
            )
        else:
            # Without spatial attention the video pass does not depend on the text: run it once per clip.
            memory, video_final = self.video_lstm(
                self.dropout(features.mean(dim=(2, 3))), frame_mask.sum(1), return_outputs=self.config.temporal
            )
            frame_mask = frame_mask[rows]
            memory = memory[rows] if memory is not None else None
            video_final = [(h[rows], c[rows]) for h, c in video_final]
        _, text_final = self.text_lstm(embedded, token_lengths, state=video_final)
        h_q = _state_vector(text_final)

        temporal_w = None
        if self.temporal_attention is not None:
            context, temporal_w = self.temporal_attention(memory, h_q, frame_mask)
            z = torch.tanh(self.context_proj(context)) + h_q
        else:
            z = h_q
        z = self.dropout(z)
        scores = HEADS[spec.head].scores(self.heads[task](z), b)
        if mc:
            if temporal_w is not None:
                temporal_w = temporal_w.reshape(b, k, t)
            if spatial_w is not None:
                spatial_w = spatial_w.reshape(b, k, t, -1)
        return ModelOutput(scores=scores, temporal_attention=temporal_w, spatial_attention=spatial_w)

    def forward_tasks(
        self,
        inputs: dict[str, dict[str, torch.Tensor]],
        frame_mask: torch.Tensor,
        features: torch.Tensor | None = None,
        frames: torch.Tensor | None = None,
    ) -> dict[str, ModelOutput]:
        """Questions of several tasks about one batch of clips: the backbone runs once per clip.

        ``inputs[task]`` holds ``tokens``, ``token_lengths`` and ``clip_index`` (see :meth:`forward`).
        """
        if frames is not None:
            features = encode_frames(self.backbone, frames, frame_mask)
        return {
            task: self.forward(
                task, x["tokens"], x["token_lengths"], frame_mask, features=features, clip_index=x["clip_index"]
            )
            for task, x in inputs.items()
        }


class MultiTaskStep(nn.Module):
    """``forward`` = :meth:`STVQA.forward_tasks`, so DistributedDataParallel can wrap a multi-task step."""

    def __init__(self, model: STVQA) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs, frame_mask, features=None, frames=None) -> dict[str, ModelOutput]:
        return self.model.forward_tasks(inputs, frame_mask, features=features, frames=frames)


@dataclass(frozen=True)
class Head:
    """A kind of task head: ``build(config, state_dim)`` makes the module; ``scores(output, b)`` shapes
    its output on the ``[B * k, out]`` states into the task's scores (see :class:`ModelOutput`)."""

    build: Callable[[ModelConfig, int], nn.Module]
    scores: Callable[[torch.Tensor, int], torch.Tensor]


#: Head kinds by :attr:`stqa.tasks.TaskSpec.head`. The module layouts are part of the checkpoint format
#: (state-dict keys), so a new kind gets a new entry rather than a changed one.
HEADS: dict[str, Head] = {
    # One score per (question + candidate) pair, read as [B, k].
    "candidate_scores": Head(
        build=lambda cfg, h2: nn.Sequential(
            nn.Linear(h2, cfg.hidden_dim), nn.ReLU(), nn.Linear(cfg.hidden_dim, 1, bias=False)
        ),
        scores=lambda out, b: out.reshape(b, -1),
    ),
    "regression": Head(build=lambda cfg, h2: nn.Linear(h2, 1), scores=lambda out, b: out.squeeze(-1)),
    "classifier": Head(build=lambda cfg, h2: nn.Linear(h2, cfg.num_answers), scores=lambda out, b: out),
}


def hinge_loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multiple choice: ``sum_{k != gt} max(0, 1 + s_k - s_gt)`` (the official code also sums the k = gt
    term, a constant 1 with no gradient)."""
    gt = scores.gather(1, target.view(-1, 1))
    margins = (1.0 + scores - gt).clamp(min=0)
    not_gt = torch.ones_like(margins, dtype=torch.bool).scatter_(1, target.view(-1, 1), False)
    return (margins * not_gt).sum(1).mean()


def count_mse_loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Count: MSE against ``max(y, 1)`` (:func:`stqa.tasks.count_target`; targets are the raw labels)."""
    return F.mse_loss(scores, target.float().clamp(min=float(task_registry.COUNT_MIN)))


def answer_cross_entropy(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Answer classification: cross-entropy; gold ``<unk>`` (index 1, answers never seen in training)
    is ignored."""
    valid = target != 1
    if not bool(valid.any()):
        return scores.sum() * 0.0
    return F.cross_entropy(scores[valid], target[valid])


#: Losses by :attr:`stqa.tasks.TaskSpec.loss`.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hinge": hinge_loss,
    "mse": count_mse_loss,
    "cross_entropy": answer_cross_entropy,
}


def task_loss(task: str, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss of ``task``'s batch (its spec's ``loss``), averaged over the batch."""
    return LOSSES[task_registry.get(task).loss](scores, target)
