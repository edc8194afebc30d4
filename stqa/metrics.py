"""The official TGIF-QA scoring rules (one implementation, used by evaluate, the checks and baselines).

- Count: the target is ``max(y, 1)`` (the authors map the label 0 to 1, tgif-qa issue #12). A raw
  prediction ``y_hat`` becomes ``clip(round(y_hat), 1, 10)`` with round-half-to-even, exactly like
  ``tf.round`` in the official ``count_models.py`` (so 2.5 -> 2 and 3.5 -> 4). The reported metric is
  the MSE between the rounded prediction and the target; ``mse_raw`` (unrounded) is reported as well.
- Action / Transition: accuracy of the predicted candidate index (0..4).
- FrameQA: top-1 accuracy of the predicted answer string, also per question type
  (object / number / color / location). A gold answer outside the model's answer vocabulary can never be
  predicted and always counts as wrong.

Every test item is scored exactly once (the official evaluator's wrap-around last batch is not replicated).
Which rule a task gets, its candidate count and the count rounding come from the task registry
(:mod:`stqa.tasks`); this module is the scoring rules' one implementation.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from stqa import tasks
from stqa.tasks import count_prediction, count_target

FRAMEQA_TYPES: tuple[str, ...] = ("object", "number", "color", "location")


def _answer(record: Any) -> Any:
    try:
        return record.answer
    except AttributeError:
        raise ValueError(f"record {record!r} has no 'answer' field") from None


def score_task(
    task: str,
    records: Sequence[Any],
    predictions: Sequence[Any],
    answer_vocab: Collection[str] | None = None,
) -> dict:
    """Score ``predictions`` (one per record, same order) against the records' gold answers.

    count: raw float predictions -> ``{"mse", "mse_raw", "n"}``; action/transition: candidate indices ->
    ``{"accuracy", "n"}``; frameqa: answer strings -> ``{"accuracy", "n", "by_type"}`` where ``by_type``
    maps each question type to its accuracy (``None`` for a type with no records) and a gold answer not in
    ``answer_vocab`` (when given) always counts as wrong. Accuracies are fractions in [0, 1].
    """
    spec = tasks.get(task)
    if len(records) != len(predictions):
        raise ValueError(f"{task}: {len(records)} records but {len(predictions)} predictions")
    n = len(records)
    if n == 0:
        raise ValueError(f"{task}: nothing to score (no records)")
    for r in records:
        if getattr(r, "task", task) != task:
            raise ValueError(f"record {getattr(r, 'qid', r)!r} is a {r.task!r} question, scored as {task!r}")

    if spec.target == "count":
        sq, sq_raw = 0.0, 0.0
        for r, p in zip(records, predictions, strict=True):
            target = count_target(_answer(r))
            sq += (count_prediction(p) - target) ** 2
            sq_raw += (float(p) - target) ** 2
        return {"mse": sq / n, "mse_raw": sq_raw / n, "n": n}

    if spec.target == "candidate_index":
        correct = 0
        for r, p in zip(records, predictions, strict=True):
            if isinstance(p, bool) or int(p) != p or not 0 <= int(p) < spec.num_candidates:
                raise ValueError(f"{task}: prediction {p!r} is not a candidate index 0..{spec.num_candidates - 1}")
            correct += int(int(p) == int(_answer(r)))
        return {"accuracy": correct / n, "n": n}

    hits = dict.fromkeys(FRAMEQA_TYPES, 0)
    totals = dict.fromkeys(FRAMEQA_TYPES, 0)
    for r, p in zip(records, predictions, strict=True):
        qtype = getattr(r, "answer_type", None)
        if qtype not in totals:
            raise ValueError(f"{task} record {getattr(r, 'qid', r)!r} has unknown question type {qtype!r}")
        gold = str(_answer(r))
        known = answer_vocab is None or gold in answer_vocab
        totals[qtype] += 1
        hits[qtype] += int(known and str(p) == gold)
    by_type = {t: (hits[t] / totals[t] if totals[t] else None) for t in FRAMEQA_TYPES}
    return {"accuracy": sum(hits.values()) / n, "n": n, "by_type": by_type}


def headline(task: str, scores: dict) -> float:
    """The one number reported per task: count MSE (lower is better) or accuracy (higher is better)."""
    return tasks.get(task).headline(scores)
