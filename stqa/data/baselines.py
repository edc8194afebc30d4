"""Blind baselines: answer TGIF-QA style questions without looking at the video.

All baselines are fit on the **train** records of one task and predict in the format
:func:`stqa.metrics.score_task` scores: count -> raw floats, action/transition -> candidate indices,
frameqa -> answer strings.

- ``random``: uniform guesses (count: an integer in the train target range; MC: an index 0..4; frameqa: one
  of the train answers).
- ``majority``: the most frequent train answer / candidate index; for count the mean train target (the
  constant that minimises the squared error).
- ``text-only``: a small MLP over bag-of-words + bigram features of the question (and, for multiple choice,
  of each candidate together with length / word-overlap / position features), trained with a softmax over
  the five candidates. It is meant to be competent: if the annotation text leaks the answer (the correct
  candidate is the longest, a template implies its answer, an answer index is over-represented, ...) it
  learns it, which is what ``stqa synth --check`` relies on. Early stopping on a seeded 10% of the train
  GIFs; deterministic for a seed; a few seconds on a CPU for ~10k records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from stqa import tasks as task_registry
from stqa.data.tgifqa import QARecord, Vocab, build_answer_vocab, split_validation, tokenize
from stqa.tasks import NUM_CANDIDATES, count_target


def _task_of(records: Sequence[QARecord]) -> str:
    if not records:
        raise ValueError("a baseline needs at least one training record")
    tasks = {r.task for r in records}
    if len(tasks) != 1:
        raise ValueError(f"records of one task expected, got {sorted(tasks)}")
    task = tasks.pop()
    if task not in task_registry.TASKS:
        raise ValueError(f"unknown task {task!r}")
    return task


class _Baseline:
    """Common checks: fit once on one task, then predict records of that task."""

    name = "baseline"

    def __init__(self) -> None:
        self.task: str | None = None

    @property
    def spec(self) -> task_registry.TaskSpec:
        """The fitted task's spec (what its answers are: a count, a candidate index or a word)."""
        return task_registry.get(self.task)

    def fit(self, train_records: Sequence[QARecord]) -> _Baseline:
        self.task = _task_of(train_records)
        self._fit(list(train_records))
        return self

    def predict(self, records: Sequence[QARecord]) -> list:
        if self.task is None:
            raise RuntimeError(f"{self.name} baseline: call fit() before predict()")
        if not records:
            return []
        task = _task_of(records)
        if task != self.task:
            raise ValueError(f"{self.name} baseline was fit on {self.task!r} but asked {task!r} questions")
        return self._predict(list(records))

    def _fit(self, records: list[QARecord]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, records: list[QARecord]) -> list:  # pragma: no cover - abstract
        raise NotImplementedError


class RandomBaseline(_Baseline):
    """Uniform guesses; the same seed gives the same guesses for the same records."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed

    def _fit(self, records: list[QARecord]) -> None:
        if self.spec.target == "count":
            targets = [count_target(int(r.answer)) for r in records]
            self.low, self.high = min(targets), max(targets)
        elif self.spec.target == "answer_word":
            self.answers = sorted({str(r.answer) for r in records})

    def _predict(self, records: list[QARecord]) -> list:
        rng = np.random.default_rng(self.seed)
        n = len(records)
        if self.spec.target == "count":
            return [float(v) for v in rng.integers(self.low, self.high + 1, size=n)]
        if self.spec.target == "answer_word":
            return [self.answers[i] for i in rng.integers(len(self.answers), size=n)]
        return [int(i) for i in rng.integers(self.spec.num_candidates, size=n)]


class MajorityBaseline(_Baseline):
    """The most frequent train answer (ties: smallest index / alphabetically first); count: mean target."""

    name = "majority"

    def __init__(self, seed: int = 0) -> None:  # seed accepted for a uniform constructor; unused
        super().__init__()
        self.seed = seed

    def _fit(self, records: list[QARecord]) -> None:
        if self.spec.target == "count":
            self.value: float | int | str = float(np.mean([count_target(int(r.answer)) for r in records]))
        else:
            counts = Counter(r.answer for r in records)
            self.value = min(counts, key=lambda a: (-counts[a], str(a)))

    def _predict(self, records: list[QARecord]) -> list:
        return [self.value] * len(records)


# ------------------------------------------------------------------------------------------- text-only


@lru_cache(maxsize=1 << 16)
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(tokenize(text))  # candidates repeat a lot: tokenize each distinct string once


def _ngrams(text: str) -> list[str]:
    tokens = _tokens(text)
    return [*tokens, *(f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False))]


def _pad_ids(vocab: Vocab, texts: Sequence[str]) -> torch.Tensor:
    """[N, L] n-gram ids (unknown n-grams dropped, 0 = padding)."""
    rows = [[i for i in vocab.encode(_ngrams(t)) if i != Vocab.UNK_INDEX] for t in texts]
    width = max(1, max((len(r) for r in rows), default=1))
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


_MC_EXTRA = 6 + NUM_CANDIDATES


def _mc_extra_features(record: QARecord) -> torch.Tensor:
    """[5, F]: per-candidate length, word overlap with the question, relative length, position."""
    q_tokens = set(_tokens(record.question))
    feats = []
    lens = [len(_tokens(c)) for c in record.candidates]
    chars = [len(c) for c in record.candidates]
    for i, cand in enumerate(record.candidates):
        c_tokens = _tokens(cand)
        overlap = sum(t in q_tokens for t in c_tokens) / max(1, len(c_tokens))
        pos = [0.0] * NUM_CANDIDATES
        pos[i] = 1.0
        feats.append(
            [
                lens[i] / 5.0,
                chars[i] / 20.0,
                overlap,
                (lens[i] - float(np.mean(lens))) / 5.0,
                float(chars[i] == max(chars)),
                float(chars[i] == min(chars)),
                *pos,
            ]
        )
    return torch.tensor(feats, dtype=torch.float32)


class _TextNet(nn.Module):
    """Bag of n-grams -> hidden ReLU layer -> head; for MC the candidate bag and extras join the question's."""

    def __init__(self, vocab_size: int, hidden: int, out_dim: int, multiple_choice: bool) -> None:
        super().__init__()
        # Sparse gradients: only the n-grams of a batch are updated (dense Adam over the whole table is
        # what would make this slow).
        self.q_bag = nn.EmbeddingBag(vocab_size, hidden, mode="sum", padding_idx=0, sparse=True)
        self.multiple_choice = multiple_choice
        if multiple_choice:
            self.c_bag = nn.EmbeddingBag(vocab_size, hidden, mode="sum", padding_idx=0, sparse=True)
            self.extra = nn.Linear(_MC_EXTRA, hidden)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, q: torch.Tensor, c: torch.Tensor | None = None, extra: torch.Tensor | None = None):
        h = self.q_bag(q) + self.bias  # [B, H]
        if not self.multiple_choice:
            return self.head(torch.relu(h)).squeeze(-1) if self.head.out_features == 1 else self.head(torch.relu(h))
        b, k, length = c.shape
        hc = self.c_bag(c.reshape(b * k, length)).reshape(b, k, -1) + self.extra(extra)
        return self.head(torch.relu(h[:, None, :] + hc)).squeeze(-1)  # [B, 5] candidate scores


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded: these models are tiny, and intra-op thread fan-out made fitting ~10x
    slower on a busy 2-core machine (measured 2026-11-21)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TextOnlyBaseline(_Baseline):
    """An MLP over question (and candidate) n-grams; see the module docstring."""

    name = "text-only"

    def __init__(
        self,
        seed: int = 0,
        hidden: int = 64,
        max_epochs: int = 30,
        patience: int = 3,
        batch_size: int = 256,
        lr: float = 3e-3,
        min_count: int = 2,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.hidden = hidden
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.lr = lr
        self.min_count = min_count

    def _inputs(self, records: list[QARecord]) -> tuple[torch.Tensor, ...]:
        q = _pad_ids(self.vocab, [r.question for r in records])
        if not self.spec.multiple_choice:
            return (q,)
        cands = [_pad_ids(self.vocab, list(r.candidates)) for r in records]
        width = max(t.shape[1] for t in cands)
        c = torch.zeros(len(records), self.spec.num_candidates, width, dtype=torch.long)
        for i, t in enumerate(cands):
            c[i, :, : t.shape[1]] = t
        extra = torch.stack([_mc_extra_features(r) for r in records])
        return q, c, extra

    def _targets(self, records: list[QARecord]) -> torch.Tensor:
        if self.spec.target == "count":
            return torch.tensor([float(count_target(int(r.answer))) for r in records])
        if self.spec.target == "answer_word":
            return torch.tensor([self.answers.encode(str(r.answer)) for r in records], dtype=torch.long)
        return torch.tensor([int(r.answer) for r in records], dtype=torch.long)

    def _loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.spec.target == "count":
            return nn.functional.mse_loss(out, target)
        return nn.functional.cross_entropy(out, target)

    def _fit(self, records: list[QARecord]) -> None:
        torch_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(self.seed)
            with _one_thread():
                self._train(records)
        finally:
            torch.random.set_rng_state(torch_state)

    def _train(self, records: list[QARecord]) -> None:
        multiple_choice = self.spec.multiple_choice
        texts: list[list[str]] = []
        for r in records:
            texts.append(_ngrams(r.question))
            texts.extend(_ngrams(c) for c in r.candidates)
        self.vocab = Vocab.build(texts, min_count=self.min_count)  # a once-seen n-gram cannot generalise
        if self.spec.target == "count":
            out_dim = 1
            targets = [count_target(int(r.answer)) for r in records]
            self.offset = float(np.mean(targets))  # the head learns the residual around the mean
        elif self.spec.target == "answer_word":
            self.answers = build_answer_vocab(records)
            out_dim = len(self.answers)
        else:
            out_dim = 1
        self.model = _TextNet(len(self.vocab), self.hidden, out_dim, multiple_choice)

        fit_records, val_records = split_validation(records, fraction=0.1, seed=self.seed)
        if len(val_records) < 10 or not fit_records:  # too few GIFs for early stopping: use all, fixed epochs
            fit_records, val_records = records, []
        x_fit, y_fit = self._inputs(fit_records), self._targets(fit_records)
        x_val, y_val = (self._inputs(val_records), self._targets(val_records)) if val_records else (None, None)

        sparse = [p for m in self.model.modules() if isinstance(m, nn.EmbeddingBag) for p in m.parameters()]
        dense = [p for p in self.model.parameters() if all(p is not q for q in sparse)]
        opts = [torch.optim.SparseAdam(sparse, lr=self.lr), torch.optim.Adam(dense, lr=self.lr)]
        gen = torch.Generator().manual_seed(self.seed)
        best_loss, best_state, bad_epochs = float("inf"), None, 0
        n = len(fit_records)
        epochs = self.max_epochs if val_records else max(5, self.max_epochs // 4)
        for _ in range(epochs):
            self.model.train()
            for idx in torch.randperm(n, generator=gen).split(self.batch_size):
                for opt in opts:
                    opt.zero_grad()
                loss = self._loss(self._forward(tuple(x[idx] for x in x_fit)), y_fit[idx])
                loss.backward()
                for opt in opts:
                    opt.step()
            if x_val is None:
                continue
            self.model.eval()
            with torch.no_grad():
                val_loss = float(self._loss(self._forward(x_val), y_val))
            if val_loss < best_loss - 1e-6:
                best_loss, bad_epochs = val_loss, 0
                best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            else:
                bad_epochs += 1
                if bad_epochs >= self.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()

    def _forward(self, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out = self.model(*x)
        if self.spec.target == "count":
            return out + self.offset
        if self.spec.target == "answer_word":  # <pad> and <unk> are never answers
            out = out.clone()
            out[:, : Vocab.UNK_INDEX + 1] = float("-inf")
        return out

    def _predict(self, records: list[QARecord]) -> list:
        with torch.no_grad(), _one_thread():
            out = self._forward(self._inputs(records))
        if self.spec.target == "count":
            return [float(v) for v in out]
        if self.spec.target == "answer_word":
            return self.answers.decode(out.argmax(dim=1).tolist())
        return [int(i) for i in out.argmax(dim=1)]


BASELINES: dict[str, type[_Baseline]] = {
    "random": RandomBaseline,
    "majority": MajorityBaseline,
    "text-only": TextOnlyBaseline,
}


def fit_baseline(name: str, train_records: Sequence[QARecord], seed: int = 0) -> _Baseline:
    """Construct baseline ``name`` with ``seed`` and fit it on ``train_records`` (one task)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return BASELINES[name](seed=seed).fit(train_records)
