"""The task registry: everything stqa knows about each TGIF-QA task, in one place.

One :class:`TaskSpec` per task holds its name and wire value, whether it is multiple choice and with how
many candidates, its annotation file's columns, how its targets are encoded, which model head and loss
it uses, how scores become an answer and a confidence (:meth:`TaskSpec.decide`, the one path shared by
``stqa evaluate`` and the Predictor, hence the server), and its scoring rule. Code elsewhere asks the
registry (``get("count").multiple_choice``) instead of naming tasks. Adding a task means one new
``TaskSpec`` here and its head in :mod:`stqa.models.stvqa`.

Torch-free on purpose: the client, the server's validation and the synthetic generator import it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Candidates of a multiple-choice question (TGIF-QA's Action and Transition: always five).
NUM_CANDIDATES = 5
#: Official count range: labels are clipped to it (0 is mapped to 1, tgif-qa issue #12), and a raw
#: regression value is rounded half-to-even into it. COUNT_MAX is also the annotation format's largest
#: answer: 10 means "10 or more" (questions say "10 or more than 10 times"); the real files hold {0, 2..10}.
COUNT_MIN, COUNT_MAX = 1, 10
#: Answer-vocabulary entries that are never an answer.
RESERVED_WORDS = 2  # <pad>, <unk>
#: How many ranked answers a decision carries.
TOP_K = 5


@dataclass(frozen=True)
class Decision:
    """What the model answered for one question.

    ``prediction`` is what the scoring rule takes (candidate index, raw count, or answer word);
    ``answer`` the text shown to a person; ``answer_index`` the chosen candidate (-1 unless multiple
    choice); ``count`` the raw regression value (count only); ``confidence`` the answer's probability
    (count: 1 at an integer, 0 half-way between two); ``top_k`` (text, probability), best first;
    ``best`` the index into the scores that won (for picking that candidate's attention maps).
    """

    prediction: Any
    answer: str
    answer_index: int
    count: float | None
    confidence: float
    top_k: list[tuple[str, float]]
    best: int


@dataclass(frozen=True)
class TaskSpec:
    """One TGIF-QA task.

    ``target``: how an annotation becomes a training target (``"candidate_index"``, ``"count"``,
    ``"answer_word"``); ``head``/``loss``: the model head and its loss; ``metric``: the headline number
    (``"mse"`` lower is better, ``"accuracy"`` higher is better).
    """

    name: str
    proto_name: str
    proto_value: int
    num_candidates: int
    columns: tuple[str, ...]
    vid_id_prefix: str
    target: str
    head: str
    loss: str
    metric: str

    @property
    def multiple_choice(self) -> bool:
        return self.num_candidates > 0

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "mse"

    def headline(self, scores: dict) -> float:
        """The one number reported for this task from a :func:`stqa.metrics.score_task` result."""
        return float(scores[self.metric])

    def question_texts(self, question: str, candidates: Sequence[str] = ()) -> list[str]:
        """The texts the model reads for one question: ``question + ' ' + candidate`` for each candidate
        (multiple choice, the official encoding), else the question alone."""
        if self.multiple_choice:
            return [f"{question} {candidate}" for candidate in candidates]
        return [question]

    def encode_target(self, answer: Any, answer_vocab: Any = None) -> int:
        """The training/evaluation target of a gold answer: the candidate index, the raw count label
        (the loss applies :func:`count_target`), or the answer's index in ``answer_vocab`` (``<unk>`` if
        unseen in training)."""
        if self.target == "answer_word":
            if answer_vocab is None:
                raise ValueError(f"{self.name} records need the answer vocabulary")
            return int(answer_vocab.encode(str(answer)))
        return int(answer)

    def decide(self, scores: Sequence[float] | np.ndarray | Any, candidates: Sequence[str] = (),
               answer_words: Sequence[str] | None = None) -> Decision:
        """Turn the model's scores for one question into a :class:`Decision`.

        ``scores``: one per candidate (multiple choice), one raw value (count), or one per answer word
        (``answer_words`` is the answer vocabulary's ``itos``). Ties go to the lowest index, as the
        official argmax does; reserved words (<pad>, <unk>) are never answers.
        """
        values = np.asarray(_to_numpy(scores), dtype=np.float64).reshape(-1)
        if self.target == "candidate_index":
            return _decide_candidate(self, values, candidates)
        if self.target == "count":
            return _decide_count(values)
        if answer_words is None:
            raise ValueError(f"task {self.name!r} needs the answer vocabulary to decide")
        return _decide_word(values, answer_words)

    def decide_among(self, scores: Sequence[float] | np.ndarray | Any, phrases: Sequence[str]) -> Decision:
        """A multiple-choice question asked without candidates: ``scores`` has one score per answer phrase
        the model saw in training (``phrases``); the best phrase answers, ``top_k`` holds the
        :data:`TOP_K` best, probabilities are a softmax over all of them, ``answer_index`` is -1 (there
        were no candidates to index)."""
        if not self.multiple_choice:
            raise ValueError(f"task {self.name!r} is not multiple choice")
        values = np.asarray(_to_numpy(scores), dtype=np.float64).reshape(-1)
        if len(values) != len(phrases) or not len(phrases):
            raise ValueError(f"{self.name}: {len(values)} scores for {len(phrases)} answer phrases")
        order = _ranked(values)
        probs = _softmax(values)
        best = order[0]
        return Decision(prediction=best, answer=str(phrases[best]), answer_index=-1, count=None,
                        confidence=float(probs[best]),
                        top_k=[(str(phrases[j]), float(probs[j])) for j in order[:TOP_K]], best=best)


_TASKS = (
    TaskSpec("count", "COUNT", 1, 0, ("gif_name", "question", "answer", "vid_id", "key"), "COUNT",
             target="count", head="regression", loss="mse", metric="mse"),
    TaskSpec("action", "ACTION", 2, NUM_CANDIDATES,
             ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"), "ACTION",
             target="candidate_index", head="candidate_scores", loss="hinge", metric="accuracy"),
    TaskSpec("transition", "TRANSITION", 3, NUM_CANDIDATES,
             ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"), "TRANS",
             target="candidate_index", head="candidate_scores", loss="hinge", metric="accuracy"),
    TaskSpec("frameqa", "FRAMEQA", 4, 0,
             ("gif_name", "question", "answer", "type", "vid_id", "key", "description"), "FRAMEQA",
             target="answer_word", head="classifier", loss="cross_entropy", metric="accuracy"),
)

#: Every task by name, in the canonical order (count, action, transition, frameqa).
TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _TASKS}
#: The task names in canonical order.
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
#: The multiple-choice task names.
MC_TASKS: tuple[str, ...] = tuple(name for name, spec in TASKS.items() if spec.multiple_choice)
_BY_PROTO: dict[int, TaskSpec] = {spec.proto_value: spec for spec in _TASKS}


def get(name: str) -> TaskSpec:
    """The spec of task ``name``; ValueError naming the known tasks otherwise."""
    spec = TASKS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASK_NAMES)}")
    return spec


def from_proto(value: int) -> TaskSpec:
    """The spec of a ``stqa.v1.Task`` enum value; ValueError for 0 (unspecified) or an unknown value."""
    spec = _BY_PROTO.get(int(value))
    if spec is None:
        raise ValueError(f"unknown task value {value}; expected "
                         + ", ".join(f"{s.proto_name}={s.proto_value}" for s in _TASKS))
    return spec


# -- the task a question asks ---------------------------------------------------------------------------
# TGIF-QA's questions come from templates per task (Jang et al., CVPR 2017, Sec. 3); these patterns are
# those templates. Measured on every question of the real annotation files (docs/serving.md, "Task
# inference"); "do once"/"do twice" are the synthetic benchmark's spelling of "do 1 time"/"do 2 times"
# (only after "do": TGIF-QA's FrameQA asks "what do the men play together all at once ?").
_COUNT = re.compile(r"^\s*how\s+many\s+times\b")
_ACTION = re.compile(r"^\s*what\s+(?:does|do)\b.*\b(?:times?|do\s+(?:once|twice))\s*[?.!]*\s*$")
_TRANSITION = re.compile(
    r"^\s*what\s+(?:does|do)\b.*\b(?:do|does)\s+(?:before|after|beforehand|afterwards?)\b")


def infer_task(question: str) -> str:
    """The task a question asks, from its wording alone: ``count`` ("how many times ..."), ``transition``
    ("what does ... do before/after ..."), ``action`` ("what does ... do N times"), else ``frameqa``.

    Transition is tested before action: "what does he do after he jumps two times ?" asks for a transition.
    ValueError for a question that is not a string.
    """
    if not isinstance(question, str):
        raise ValueError(f"question must be a string, got {type(question).__name__}")
    text = question.lower()
    if _COUNT.search(text):
        return "count"
    if _TRANSITION.search(text):
        return "transition"
    if _ACTION.search(text):
        return "action"
    return "frameqa"


def parse_task_list(text: str) -> tuple[str, ...]:
    """``"all"``, one task, or a comma-separated list -> task names in canonical order, no duplicates."""
    if text.strip() == "all":
        return TASK_NAMES
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"no task named in {text!r}; expected 'all' or some of {', '.join(TASK_NAMES)}")
    for name in names:
        get(name)
    return tuple(name for name in TASK_NAMES if name in names)


def count_target(label: int) -> int:
    """Training/evaluation target of a count label: ``max(label, 1)``."""
    return max(int(label), COUNT_MIN)


def count_prediction(raw: float) -> int:
    """``clip(round_half_to_even(raw), 1, 10)``, exactly like ``tf.round`` in the official code;
    non-finite input is an error, not a silent clip."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"count prediction must be finite, got {raw!r}")
    return int(min(max(round(value), COUNT_MIN), COUNT_MAX))  # Python round() is half-to-even


def count_confidence(raw: float) -> float:
    """How far the regression value is from a rounding boundary: 1 at an integer, 0 half-way between
    two (values outside [1, 10] clip to the end points, so they count as certain there)."""
    clipped = min(max(float(raw), float(COUNT_MIN)), float(COUNT_MAX))
    return float(max(0.0, 1.0 - 2.0 * abs(clipped - round(clipped))))


# -- the deciders --------------------------------------------------------------------------------------


def _to_numpy(scores: Any) -> Any:
    detach = getattr(scores, "detach", None)  # a torch tensor, without importing torch here
    if detach is not None:
        return detach().float().cpu().numpy()
    return scores


def _ranked(values: np.ndarray) -> list[int]:
    """Indices by score, best first; ties keep index order (the lowest index wins)."""
    return [int(i) for i in np.argsort(-values, kind="stable")]


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def _decide_candidate(spec: TaskSpec, values: np.ndarray, candidates: Sequence[str]) -> Decision:
    if len(values) != spec.num_candidates:
        raise ValueError(f"{spec.name}: expected {spec.num_candidates} candidate scores, got {len(values)}")
    order = _ranked(values)
    probs = _softmax(values)
    texts = list(candidates) if candidates else [str(j) for j in range(len(values))]
    best = order[0]
    return Decision(prediction=best, answer=texts[best], answer_index=best, count=None,
                    confidence=float(probs[best]), top_k=[(texts[j], float(probs[j])) for j in order], best=best)


def _decide_count(values: np.ndarray) -> Decision:
    if len(values) != 1:
        raise ValueError(f"count: expected one regression value, got {len(values)}")
    raw = float(values[0])
    value = count_prediction(raw)
    confidence = count_confidence(raw)
    return Decision(prediction=raw, answer=str(value), answer_index=-1, count=raw, confidence=confidence,
                    top_k=[(str(value), confidence)], best=0)


def _decide_word(values: np.ndarray, answer_words: Sequence[str]) -> Decision:
    if len(values) != len(answer_words) or len(values) <= RESERVED_WORDS:
        raise ValueError(f"frameqa: {len(values)} scores for an answer vocabulary of {len(answer_words)} words")
    words = values[RESERVED_WORDS:]
    order = [RESERVED_WORDS + j for j in _ranked(words)]
    probs = _softmax(words)
    best = order[0]
    top = order[:TOP_K]
    return Decision(prediction=answer_words[best], answer=answer_words[best], answer_index=-1, count=None,
                    confidence=float(probs[best - RESERVED_WORDS]),
                    top_k=[(answer_words[j], float(probs[j - RESERVED_WORDS])) for j in top], best=best)
