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
from stqa.checkpoint import (
    BUNDLED_MODEL,
    CheckpointError,
    check_spec,
    decode_key_set,
    is_checkpoint,
    load_checkpoint,
)
from stqa.data import tgifqa
from stqa.data.dataset import FeatureClips, FrameClips, QADataset, check_clips
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



# -- the check of training GIFs against scored GIFs ---------------------------------------------------
def training_overlap(checkpoint_config: dict, datasets: dict[str, QADataset]) -> dict:
    """Whether the GIFs the checkpoint trained or validated on (its ``training_keys`` record, written by
    ``stqa train``) intersect the GIFs about to be scored: ``{"checked": bool, "overlap": {task: n GIFs},
    "message": one line for stderr}``. A checkpoint without the record (older runs, end-to-end runs
    from before the record) cannot be checked, and the message says so."""
    record = checkpoint_config.get("training_keys")
    if record is None:
        return {"checked": False, "overlap": {},
                "message": "note: the checkpoint does not record its training GIFs; whether they overlap the "
                           "scored GIFs could not be checked"}
    try:
        seen = decode_key_set(record)
    except ValueError as err:
        return {"checked": False, "overlap": {},
                "message": f"note: the checkpoint's record of its training GIFs is unreadable ({err}); "
                           "whether they overlap the scored GIFs could not be checked"}
    synthetic = (checkpoint_config.get("training_data") or {}).get("synthetic")
    trained_seed = int(synthetic["seed"]) if synthetic else None
    overlap = {t: len({r.key for r in ds.records if _may_be_seen(r.gif_name, trained_seed)} & seen)
               for t, ds in datasets.items()}
    hit = {t: n for t, n in overlap.items() if n}
    if not hit:
        return {"checked": True, "overlap": overlap,
                "message": f"checked: none of the scored GIFs is among the checkpoint's {len(seen)} training GIFs"}
    detail = ", ".join(f"{t} {n} of {len({r.key for r in datasets[t].records})}" for t, n in hit.items())
    return {"checked": True, "overlap": overlap,
            "message": f"WARNING: the checkpoint trained or validated on GIFs it is now scored on ({detail} "
                       "scored GIFs); these numbers are not test numbers"}


def _may_be_seen(gif_name: str, trained_seed: int | None) -> bool:
    """Whether a scored GIF can be one the checkpoint saw, as far as its name tells. A synthetic set's key is
    its video index + 1 whatever the seed, so for a checkpoint trained on synthetic seed S (``trained_seed``)
    a key match is the same video only when the name is ``synth<S>_...``; any other name, or a checkpoint
    not trained on a synthetic set, is judged by the key alone."""
    from stqa.data import synth  # torch-free

    if trained_seed is None:
        return True
    try:
        seed, _ = synth.parse_gif_name(gif_name)
    except ValueError:
        return True
    return seed == trained_seed


# -- FrameQA beside published numbers -----------------------------------------------------------------
def answer_set_numbers(records, predictions, answer_vocab) -> dict:
    """The numbers of an open-ended task (FrameQA) that put our accuracy beside published tables (docs/fidelity.md, "The FrameQA
    answer set"): how many scored answers the training answers never contain (our head cannot produce
    them, so they are always wrong, and ``1 - share`` is the ceiling), and the accuracy on the questions
    whose answer was seen in training.

    The official protocol's accuracy (classes from train ∪ test) is numerically our ``accuracy`` for this
    model: its denominator is every question too, and a test-only class is not in this head, so it is
    recorded as that same number under a name that says so, not computed differently.
    """
    seen = [str(r.answer) in answer_vocab.stoi for r in records]
    n_unseen = seen.count(False)
    hits = sum(1 for r, p, s in zip(records, predictions, seen, strict=True) if s and p == str(r.answer))
    n_seen = len(records) - n_unseen
    return {
        "unseen_answer_share": n_unseen / len(records),
        "n_unseen_answer": n_unseen,
        "accuracy_on_seen_answers": hits / n_seen if n_seen else None,
        "ceiling": n_seen / len(records),
        "official_answer_set_accuracy": hits / len(records),
        "official_answer_set_accuracy_is": "our accuracy: same denominator, and this head has no test-only class",
    }


def format_answer_set(task: str, numbers: dict) -> str:
    """The labelled lines printed under the table."""
    seen = numbers["accuracy_on_seen_answers"]
    return "\n".join([
        f"{task}: {100 * numbers['unseen_answer_share']:.2f}% of the scored questions ({numbers['n_unseen_answer']}) "
        f"have an answer never seen in training (always wrong here; ceiling {100 * numbers['ceiling']:.2f}%)",
        f"{task}: accuracy on the questions whose answer was seen in training: "
        + ("-" if seen is None else f"{100 * seen:.2f}%"),
        f"{task}: accuracy under the official answer-set protocol (train ∪ test classes): "
        f"{100 * numbers['official_answer_set_accuracy']:.2f}%, = our accuracy (this head has no test-only class; "
        "docs/fidelity.md)",
    ])


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

    records = {t: tgifqa.load(data, t, args.split) for t in names}
    check_clips(clips, [r for t in names for r in records[t]])
    warning = training_overlap_warning(ckpt.config, {r.gif_name for t in names for r in records[t]})
    if warning and rank == 0:
        print(f"warning: {warning}", file=sys.stderr)
    max_len = int(ckpt.config.get("max_question_len", 35))
    datasets = {t: QADataset(records[t], t, word_vocab, answer_vocab, clips, max_len) for t in names}
    overlap = training_overlap(ckpt.config, datasets)
    if rank == 0:
        print(overlap["message"], file=sys.stderr)
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
    open_ended = [t for t in names if tasks.get(t).target == "answer_word" and t in payload]
    if answer_vocab is not None:
        for t in open_ended:
            payload[t] = dict(payload[t], answer_set=answer_set_numbers(
                datasets[t].records, result["predictions"][t], answer_vocab))
    if "baselines" in metrics:
        payload["baselines"] = metrics["baselines"]
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
        info = {"model_version": ckpt.model_version, "checkpoint": str(ckpt.path), "data": str(data),
                "split": args.split, "tasks": names, "world_size": world,
                "training_overlap": {k: v for k, v in overlap.items() if k != "message"}}
        (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        with open(out / "predictions.jsonl", "w") as fh:
            for t in names:
                for row in _prediction_rows(t, datasets[t].records, result["predictions"][t], answer_vocab):
                    fh.write(json.dumps(row) + "\n")
    print(f"{ckpt.model_version} on {args.split} ({data}):", file=sys.stderr)
    print(format_table(metrics))
    for t in open_ended:
        if "answer_set" in payload[t]:
            print(format_answer_set(t, payload[t]["answer_set"]))
    return 0
