"""``stqa evaluate``: score a checkpoint on a TGIF-QA style split, every item exactly once.

Under ``torchrun`` each rank scores a strided shard of every task (:mod:`stqa.evaluation.evaluator`);
rank 0 writes ``metrics.json``, ``predictions.jsonl`` and ``info.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stqa import tasks
from stqa.checkpoint import BUNDLED_MODEL, CheckpointError, check_spec, is_checkpoint, load_checkpoint
from stqa.data import tgifqa
from stqa.data.dataset import FeatureClips, FrameClips, QADataset
from stqa.evaluation.evaluator import evaluate_datasets
from stqa.inference import model_from_checkpoint
from stqa.metrics import score_task
from stqa.utils import comm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stqa evaluate``."""
    a = parser.add_argument
    a("--checkpoint", help="checkpoint or run directory (default: the bundled model)")
    a("--data", required=True, help="directory with the TGIF-QA <Split>_<task>_question.csv files")
    a("--features", help="HDF5 feature store matching the checkpoint's feature spec")
    a("--videos", help="directory of <gif_name>.gif videos (default: DATA/gifs) for end-to-end checkpoints")
    a("--task", choices=tasks.TASK_NAMES, help="one task (default: every task in both the checkpoint and the data)")
    a("--split", default="test", choices=["train", "test"], help="annotation split to score (default test)")
    a("--out", help="directory for metrics.json, predictions.jsonl and info.json (model version, split)")
    a("--batch-size", type=int, default=64)
    a("--device", default="cpu")
    a("--baseline", action="append", choices=["random", "majority", "text-only"], default=[],
      help="also report a blind baseline fitted on the train split (repeatable)")
    a("--seed", type=int, default=0, help="seed of the random baseline")



# -- the command -------------------------------------------------------------------------------------
def _prediction_rows(task: str, records, preds, answer_vocab) -> list[dict]:
    target = tasks.get(task).target
    rows = []
    for r, p in zip(records, preds, strict=True):
        row = {"task": task, "qid": r.qid, "key": r.key, "question": r.question}
        if target == "candidate_index":
            row.update(prediction=p, prediction_text=r.candidates[p], answer=int(r.answer),
                       correct=p == int(r.answer))
        elif target == "count":
            pred, gold = tasks.count_prediction(p), tasks.count_target(int(r.answer))
            row.update(prediction=int(pred), raw=round(float(p), 4), answer=int(r.answer),
                       error=float((pred - gold) ** 2))
        else:
            in_vocab = str(r.answer) in answer_vocab.stoi
            row.update(prediction=p, answer=str(r.answer), answer_type=r.answer_type,
                       correct=in_vocab and p == str(r.answer))
        rows.append(row)
    return rows


def format_table(metrics: dict) -> str:
    """A plain-text table: one row per model/baseline, one column per task."""
    names = [t for t in tasks.TASK_NAMES if t in metrics.get("model", {})]

    def cell(task: str, m: dict | None) -> str:
        if not m or task not in m:
            return "-"
        value = tasks.get(task).headline(m[task])
        return f"{value:.3f} mse" if tasks.get(task).metric == "mse" else f"{100 * value:.2f}%"

    rows = [("model", metrics.get("model"))] + list(metrics.get("baselines", {}).items())
    header = ["", *names]
    body = [[name, *(cell(t, m) for t in names)] for name, m in rows]
    body.append(["n", *(str(metrics["model"][t]["n"]) for t in names)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *body]]
    return "\n".join(lines)


def training_overlap_warning(config: dict, gif_names: set[str]) -> str | None:
    """A warning when videos to score are ones the checkpoint trained (or selected its epoch) on, else None.

    Synthetic scenes depend only on (seed, index), so ``synth<seed>_<index>`` of any set generated with the
    checkpoint's ``training_data.synthetic`` seed is one of its training videos when ``index`` is below its
    video count and outside that set's test split (``stqa.data.synth.test_indices``).
    """
    from stqa.data import synth

    trained = (config.get("training_data") or {}).get("synthetic")
    if not trained or not gif_names:
        return None
    seed, n_videos = int(trained["seed"]), int(trained["videos"])
    test = synth.test_indices(seed, n_videos, float(trained["test_fraction"]))
    seen = 0
    for name in gif_names:
        try:
            s, index = synth.parse_gif_name(name)
        except ValueError:
            continue  # not a synthetic video: nothing known about it
        seen += s == seed and index < n_videos and index not in test
    if not seen:
        return None
    return (f"{seen} of the {len(gif_names)} videos to score were this checkpoint's training or validation videos "
            f"(synthetic seed {seed}, videos 0..{n_videos - 1}): the scores are optimistic; generate the set with "
            f"another --seed")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stqa evaluate``."""
    rank, world, device = comm.init_distributed(args.device)
    try:
        return _evaluate(args, rank, world, device)
    except CheckpointError as err:  # same line as stqa.cli prints; kept here for callers of run() itself
        print(f"stqa evaluate: error: {err}", file=sys.stderr)
        return 2
    finally:
        comm.shutdown(world)


def _evaluate(args: argparse.Namespace, rank: int, world: int, device) -> int:
    if args.checkpoint is None and not is_checkpoint(BUNDLED_MODEL):
        raise SystemExit(f"error: no --checkpoint given and the bundled model is missing from {BUNDLED_MODEL} "
                         "(run `make model`)")
    ckpt = load_checkpoint(args.checkpoint or BUNDLED_MODEL)
    model, word_vocab, answer_vocab, spec = model_from_checkpoint(ckpt, device)
    data = Path(args.data)
    served = list(model.config.tasks)
    if args.task:
        if args.task not in served:
            raise SystemExit(f"error: checkpoint {ckpt.model_version} does not serve {args.task} (tasks: {', '.join(served)})")
        names = [args.task]
    else:
        names = [t for t in served if (data / tgifqa.annotation_filename(t, args.split)).is_file()]
        if not names:
            raise SystemExit(f"error: no {args.split} annotation files in {data} for the checkpoint's tasks ({', '.join(served)})")
    if args.features:
        from stqa.data.features import FeatureStore  # h5py: only with --features

        if model.backbone is not None:
            raise SystemExit("error: this checkpoint trains its backbone end to end; give --videos, not --features")
        clips = FeatureClips(FeatureStore(args.features))
        check_spec(spec, clips.spec, f"feature store {args.features}")
    else:
        if model.backbone is None:
            raise SystemExit(
                f"error: checkpoint {ckpt.model_version} reads {spec.backbone} features: give --features"
            )
        clips = FrameClips(args.videos or data / "gifs", spec)

    warning = training_overlap_warning(ckpt.config, {r.gif_name for t in names for r in tgifqa.load(data, t, args.split)})
    if warning and rank == 0:
        print(f"warning: {warning}", file=sys.stderr)
    datasets = {}
    for t in names:
        records = tgifqa.load(data, t, args.split)
        datasets[t] = QADataset(records, t, word_vocab, answer_vocab, clips, int(ckpt.config.get("max_question_len", 35)))
    result = evaluate_datasets(model, datasets, answer_vocab, args.batch_size, device, rank, world)
    metrics = {"model": result["metrics"]}
    if args.baseline:
        from stqa.data.baselines import fit_baseline  # only with --baseline

        metrics["baselines"] = {}
        for name in args.baseline:
            metrics["baselines"][name] = {}
            for t in names:
                train = tgifqa.load(data, t, "train")
                base = fit_baseline(name, train, seed=args.seed)
                preds = base.predict(datasets[t].records)
                metrics["baselines"][name][t] = score_task(
                    t, datasets[t].records, preds, answer_vocab=tgifqa.build_answer_vocab(train) if tasks.get(t).target == "answer_word" else None
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
                "split": args.split, "tasks": names, "world_size": world}
        (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        with open(out / "predictions.jsonl", "w") as fh:
            for t in names:
                for row in _prediction_rows(t, datasets[t].records, result["predictions"][t], answer_vocab):
                    fh.write(json.dumps(row) + "\n")
    print(f"{ckpt.model_version} on {args.split} ({data}):", file=sys.stderr)
    print(format_table(metrics))
    return 0
