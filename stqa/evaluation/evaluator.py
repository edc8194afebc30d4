"""Score a model on TGIF-QA style datasets, every item exactly once, in one process or under torchrun.

Each rank answers a strided shard of every task (no padding, so no duplicates), deciding each answer
with :meth:`stqa.tasks.TaskSpec.decide` (the Predictor's path too); the shards are gathered, checked to
cover each item exactly once, and scored with :func:`stqa.metrics.score_task`.
"""

from __future__ import annotations

import torch

from stqa import tasks
from stqa.data.dataset import QADataset, evaluation_batches, make_batch, model_inputs
from stqa.metrics import score_task
from stqa.models.encode import encode_clips
from stqa.utils import comm


def predict_shard(model, dataset: QADataset, answer_vocab, batch_size: int, device, rank: int = 0,
                  world: int = 1) -> dict[int, int | float | str]:
    """index -> prediction (the format :func:`stqa.metrics.score_task` takes) for this rank's shard."""
    spec = tasks.get(dataset.task)
    words = answer_vocab.itos if answer_vocab is not None else None
    out: dict[int, int | float | str] = {}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for idxs in evaluation_batches(len(dataset), batch_size, rank, world):
            batch = make_batch(dataset, idxs)
            scores = model(dataset.task, **model_inputs(batch, device)).scores.float().cpu()
            for row, i in enumerate(batch["index"].tolist()):
                out[i] = spec.decide(scores[row], answer_words=words).prediction
    model.train(was_training)
    return out


def gather_shards(local: dict[int, object], size: int, world: int) -> dict[int, object]:
    """Merge every rank's shard; each index must arrive exactly once."""
    merged: dict[int, object] = {}
    for part in comm.all_gather_object(local, world):
        for i, v in part.items():
            if i in merged:
                raise RuntimeError(f"evaluation item {i} was scored twice")
            merged[i] = v
    missing = size - len(merged)
    if missing:
        raise RuntimeError(f"evaluation missed {missing} of {size} items")
    return merged


def evaluate_datasets(model, datasets: dict[str, QADataset], answer_vocab, batch_size: int, device,
                      rank: int = 0, world: int = 1) -> dict:
    """Score every item of each task's dataset once: ``{"metrics": {task: ...}, "predictions": {task: [...]}}``
    (predictions in dataset order). The same result on every rank.

    Datasets over raw frames are first encoded by the model's backbone (:func:`stqa.models.encode.encode_clips`):
    once per video of this rank's shard (TGIF-QA GIFs have several questions), on the same float32 frames
    the Predictor uses, maps kept in float32.
    """
    first = next(iter(datasets.values()), None)
    if first is not None and first.clips.kind == "frames" and getattr(model, "backbone", None) is not None:
        mine = [ds.records[i] for ds in datasets.values() for i in range(rank, len(ds), world)]
        encoded = encode_clips(model.backbone, first.clips, mine, next(model.parameters()).device)
        datasets = {t: ds.with_clips(encoded) for t, ds in datasets.items()}
    metrics, predictions = {}, {}
    for task, ds in datasets.items():
        merged = gather_shards(predict_shard(model, ds, answer_vocab, batch_size, device, rank, world), len(ds), world)
        preds = [merged[i] for i in range(len(ds))]
        predictions[task] = preds
        metrics[task] = score_task(task, ds.records, preds, answer_vocab=answer_vocab)
    return {"metrics": metrics, "predictions": predictions}
