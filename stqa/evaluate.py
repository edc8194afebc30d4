"""``stqa evaluate``: score a checkpoint on a TGIF-QA style split, every item exactly once.

Under ``torchrun`` each rank scores a strided shard of every task (no padding, so no duplicates); the
shards are gathered on rank 0, checked to cover each item exactly once, and scored with
:func:`stqa.metrics.score_task`. Rank 0 writes ``metrics.json`` and ``predictions.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from stqa.models.stvqa import MC_TASKS, TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--checkpoint", help="checkpoint or run directory (default: the bundled model)")
    a("--data", required=True, help="directory with the TGIF-QA <Split>_<task>_question.csv files")
    a("--features", help="HDF5 feature store matching the checkpoint's feature spec")
    a("--videos", help="directory of <gif_name>.gif videos (default: DATA/gifs) for end-to-end checkpoints")
    a("--task", choices=TASKS, help="one task (default: every task in both the checkpoint and the data)")
    a("--split", default="test", choices=["train", "test"], help="annotation split to score (default test)")
    a("--out", help="directory for metrics.json, predictions.jsonl and info.json (model version, split)")
    a("--batch-size", type=int, default=64)
    a("--device", default="cpu")
    a("--baseline", action="append", choices=["random", "majority", "text-only"], default=[],
      help="also report a blind baseline fitted on the train split (repeatable)")
    a("--seed", type=int, default=0, help="seed of the random baseline")


# -- core: predictions for datasets, sharded ----------------------------------------------------------
def _raw_predictions(model, dataset, batch_size: int, device, rank: int, world: int) -> dict[int, dict]:
    """index -> raw model output for this rank's shard of ``dataset``."""
    from stqa.data.dataset import evaluation_batches, make_batch, model_inputs

    task = dataset.task
    out: dict[int, dict] = {}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for idxs in evaluation_batches(len(dataset), batch_size, rank, world):
            batch = make_batch(dataset, idxs)
            res = model(task, **model_inputs(batch, device))
            scores = res.scores.float().cpu()
            for row, i in enumerate(batch["index"].tolist()):
                out[i] = {"scores": scores[row].tolist() if scores.dim() > 1 else float(scores[row])}
    model.train(was_training)
    return out


def _gather(local: dict[int, dict], size: int, world: int) -> dict[int, dict]:
    """Merge every rank's shard; each index must arrive exactly once."""
    parts = [local]
    if world > 1:
        parts = [None] * world  # type: ignore[list-item]
        torch.distributed.all_gather_object(parts, local)
    merged: dict[int, dict] = {}
    for part in parts:
        for i, v in part.items():
            if i in merged:
                raise RuntimeError(f"evaluation item {i} was scored twice")
            merged[i] = v
    missing = size - len(merged)
    if missing:
        raise RuntimeError(f"evaluation missed {missing} of {size} items")
    return merged


def decide(task: str, raw: dict, answer_vocab) -> int | float | str:
    """A raw model output -> the prediction format of :func:`stqa.metrics.score_task`: candidate index
    (first maximum), raw count regression value, or FrameQA answer string (never <pad>/<unk>)."""
    scores = raw["scores"]
    if task in MC_TASKS:
        return int(max(range(len(scores)), key=lambda j: (scores[j], -j)))
    if task == "count":
        return float(scores)
    best = max(range(2, len(scores)), key=lambda j: (scores[j], -j))
    return answer_vocab.itos[best]


def evaluate_datasets(model, datasets: dict, answer_vocab, batch_size: int, device, rank: int = 0,
                      world: int = 1) -> dict:
    """Score every item of each task's dataset once: ``{"metrics": {task: ...}, "predictions": {task: [...]}}``
    (predictions in dataset order). The same result on every rank."""
    first = next(iter(datasets.values()), None)
    if first is not None and first.clips.kind == "frames" and getattr(model, "backbone", None) is not None:
        was_training = model.training
        model.eval()
        from stqa.data.dataset import BackboneFeatureClips

        # The backbone once per video (TGIF-QA GIFs have several questions), on the same float32 frames
        # the Predictor uses; maps kept in float32.
        encoded = BackboneFeatureClips(first.clips, model.backbone, next(model.parameters()).device,
                                       cache_dtype=torch.float32)
        datasets = {t: ds.with_clips(encoded) for t, ds in datasets.items()}
        try:
            return _evaluate_sets(model, datasets, answer_vocab, batch_size, device, rank, world)
        finally:
            model.train(was_training)
    return _evaluate_sets(model, datasets, answer_vocab, batch_size, device, rank, world)


def _evaluate_sets(model, datasets: dict, answer_vocab, batch_size: int, device, rank: int, world: int) -> dict:
    from stqa.metrics import score_task

    metrics, predictions = {}, {}
    for task, ds in datasets.items():
        merged = _gather(_raw_predictions(model, ds, batch_size, device, rank, world), len(ds), world)
        preds = [decide(task, merged[i], answer_vocab) for i in range(len(ds))]
        predictions[task] = preds
        metrics[task] = score_task(task, ds.records, preds, answer_vocab=answer_vocab)
    return {"metrics": metrics, "predictions": predictions}


# -- the command -------------------------------------------------------------------------------------
def _prediction_rows(task: str, records, preds, answer_vocab) -> list[dict]:
    from stqa.metrics import count_prediction, count_target

    rows = []
    for r, p in zip(records, preds, strict=True):
        row = {"task": task, "qid": r.qid, "key": r.key, "question": r.question}
        if task in MC_TASKS:
            row.update(prediction=p, prediction_text=r.candidates[p], answer=int(r.answer),
                       correct=p == int(r.answer))
        elif task == "count":
            pred, target = count_prediction(p), count_target(int(r.answer))
            row.update(prediction=int(pred), raw=round(float(p), 4), answer=int(r.answer),
                       error=float((pred - target) ** 2))
        else:
            in_vocab = str(r.answer) in answer_vocab.stoi
            row.update(prediction=p, answer=str(r.answer), answer_type=r.answer_type,
                       correct=in_vocab and p == str(r.answer))
        rows.append(row)
    return rows


def format_table(metrics: dict) -> str:
    """A plain-text table: one row per model/baseline, one column per task."""
    tasks = [t for t in TASKS if t in metrics.get("model", {})]

    def cell(task: str, m: dict | None) -> str:
        if not m or task not in m:
            return "-"
        return f"{m[task]['mse']:.3f} mse" if task == "count" else f"{100 * m[task]['accuracy']:.2f}%"

    rows = [("model", metrics.get("model"))] + list(metrics.get("baselines", {}).items())
    header = ["", *tasks]
    body = [[name, *(cell(t, m) for t in tasks)] for name, m in rows]
    body.append(["n", *(str(metrics["model"][t]["n"]) for t in tasks)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *body]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from stqa.checkpoint import CheckpointError
    from stqa.train import init_distributed

    rank, world, device = init_distributed(args.device)
    try:
        return _evaluate(args, rank, world, device)
    except CheckpointError as err:  # same line as stqa.cli prints; kept here for callers of run() itself
        print(f"stqa evaluate: error: {err}", file=sys.stderr)
        return 2
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _evaluate(args: argparse.Namespace, rank: int, world: int, device) -> int:
    from stqa.checkpoint import check_spec, load_checkpoint
    from stqa.data import tgifqa
    from stqa.data.dataset import FeatureClips, FrameClips, QADataset
    from stqa.inference import BUNDLED_MODEL, model_from_checkpoint
    from stqa.train import spec_dict

    if args.checkpoint is None and not (BUNDLED_MODEL / "config.json").is_file():
        raise SystemExit(f"error: no --checkpoint given and the bundled model is missing from {BUNDLED_MODEL} "
                         "(run `make model`)")
    ckpt = load_checkpoint(args.checkpoint or BUNDLED_MODEL)
    model, word_vocab, answer_vocab, spec = model_from_checkpoint(ckpt, device)
    data = Path(args.data)
    served = list(model.config.tasks)
    if args.task:
        if args.task not in served:
            raise SystemExit(f"error: checkpoint {ckpt.model_version} does not serve {args.task} (tasks: {', '.join(served)})")
        tasks = [args.task]
    else:
        tasks = [t for t in served if (data / tgifqa.annotation_filename(t, args.split)).is_file()]
        if not tasks:
            raise SystemExit(f"error: no {args.split} annotation files in {data} for the checkpoint's tasks ({', '.join(served)})")
    if args.features:
        from stqa.data.features import FeatureStore

        if model.backbone is not None:
            raise SystemExit("error: this checkpoint trains its backbone end to end; give --videos, not --features")
        clips = FeatureClips(FeatureStore(args.features))
        check_spec(spec_dict(spec), spec_dict(clips.spec), f"feature store {args.features}")
    else:
        if model.backbone is None:
            raise SystemExit(
                f"error: checkpoint {ckpt.model_version} reads {spec.backbone} features: give --features"
            )
        clips = FrameClips(args.videos or data / "gifs", spec)

    datasets = {}
    for t in tasks:
        records = tgifqa.load(data, t, args.split)
        datasets[t] = QADataset(records, t, word_vocab, answer_vocab, clips, int(ckpt.config.get("max_question_len", 35)))
    result = evaluate_datasets(model, datasets, answer_vocab, args.batch_size, device, rank, world)
    metrics = {"model": result["metrics"]}
    if args.baseline:
        from stqa.data.baselines import fit_baseline
        from stqa.metrics import score_task

        metrics["baselines"] = {}
        for name in args.baseline:
            metrics["baselines"][name] = {}
            for t in tasks:
                train = tgifqa.load(data, t, "train")
                base = fit_baseline(name, train, seed=args.seed)
                preds = base.predict(datasets[t].records)
                metrics["baselines"][name][t] = score_task(
                    t, datasets[t].records, preds, answer_vocab=tgifqa.build_answer_vocab(train) if t == "frameqa" else None
                )
    if rank != 0:
        return 0
    payload = dict(result["metrics"])
    if "baselines" in metrics:
        payload["baselines"] = metrics["baselines"]
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
        info = {"model_version": ckpt.model_version, "checkpoint": str(ckpt.path), "data": str(data),
                "split": args.split, "tasks": tasks, "world_size": world}
        (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        with open(out / "predictions.jsonl", "w") as fh:
            for t in tasks:
                for row in _prediction_rows(t, datasets[t].records, result["predictions"][t], answer_vocab):
                    fh.write(json.dumps(row) + "\n")
    print(f"{ckpt.model_version} on {args.split} ({data}):", file=sys.stderr)
    print(format_table(metrics))
    return 0
