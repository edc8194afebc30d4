"""The leakage audit (``stqa synth --check``): answer distributions and blind baselines per task for
any TGIF-QA files, synthetic or real. A set passes when a model that reads only the question text stays
near chance (see docs/synthetic.md); on the real TGIF-QA Action files it does not.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from stqa.data import tgifqa
from stqa.data.tgifqa import tokenize
from stqa.metrics import count_target, headline, score_task
from stqa.tasks import MC_TASKS, TASK_NAMES
from stqa.tasks import get as get_task

# A blind text-only model may not beat these references by more than the margins below (see
# docs/synthetic.md): multiple choice: accuracy > 1/5 + 0.10; frameqa: accuracy > (accuracy of predicting
# the most frequent train answer of each question type) + 0.10; count: MSE < 0.8 x the MSE of the mean.
MC_MARGIN = 0.10
FRAMEQA_MARGIN = 0.10
COUNT_MSE_RATIO = 0.8


def _stem(word: str) -> str:
    # Crude suffix stripping so "jumps"/"jumping"/"shakes" match the candidate "jump"/"shake".
    for suffix in ("ing", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _mentions(haystack: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(haystack[i : i + n] == phrase for i in range(len(haystack) - n + 1))


def sibling_mentions(records_by_task: dict[str, list]) -> dict[str, dict[str, float]]:
    """For MC tasks: how often the correct candidate / an average distractor is named in another question
    about the same GIF (TGIF-QA leaks Transition answers through the sibling "before"/"after" question)."""
    by_key: dict[int, list] = {}
    for recs in records_by_task.values():
        for r in recs:
            by_key.setdefault(r.key, []).append(r)
    out: dict[str, dict[str, float]] = {}
    for task in MC_TASKS:
        recs = records_by_task.get(task) or []
        if not recs:
            continue
        correct = distract = 0.0
        for r in recs:
            siblings = [[_stem(w) for w in tokenize(s.question)] for s in by_key[r.key] if s is not r]
            hit = [any(_mentions(s, [_stem(w) for w in tokenize(c)]) for s in siblings) for c in r.candidates]
            correct += hit[r.answer]
            distract += (sum(hit) - hit[r.answer]) / (len(hit) - 1)
        out[task] = {"correct": correct / len(recs), "distractor": distract / len(recs)}
    return out


def _type_prior_accuracy(train: list, test: list) -> float:
    """Accuracy of answering each FrameQA question type with its most frequent train answer."""
    best: dict[str, str] = {}
    for qtype in {r.answer_type for r in train}:
        counts = Counter(str(r.answer) for r in train if r.answer_type == qtype)
        best[qtype] = min(counts, key=lambda a: (-counts[a], a))
    return sum(best.get(r.answer_type) == str(r.answer) for r in test) / len(test)


def check_dataset(root: str | Path, seed: int = 0) -> dict:
    """Answer distributions and blind baselines per task for the TGIF-QA files in ``root``.

    Returns ``{"tasks": {task: {...}}, "sibling_mentions": {...}, "passed": bool, "checked": [tasks]}``. A
    task whose Train or Test file is missing is reported but not checked (blind baselines must be fit on
    Train and scored on Test).
    """
    # Imported here, not at the top: the baselines need torch, which `stqa synth` (generation) must not load.
    from stqa.data.baselines import BASELINES, fit_baseline

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--check: {root} is not a directory")
    report: dict = {"root": str(root), "tasks": {}, "checked": [], "passed": True}
    loaded: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    for task in TASK_NAMES:
        spec = get_task(task)
        entry: dict = {}
        splits = {}
        for split in ("train", "test"):
            path = root / tgifqa.annotation_filename(task, split)
            if path.is_file():
                splits[split] = tgifqa.load(root, task, split)
                loaded[split][task] = splits[split]
        entry["sizes"] = {s: len(v) for s, v in splits.items()}
        entry["missing"] = [s for s in ("train", "test") if s not in splits]
        for split, recs in splits.items():
            if spec.target == "count":
                dist = Counter(count_target(int(r.answer)) for r in recs)
                entry[f"{split}_answers"] = {str(k): dist[k] for k in sorted(dist)}
            elif spec.target == "answer_word":
                entry[f"{split}_types"] = dict(sorted(Counter(r.answer_type for r in recs).items()))
                by_type: dict[str, dict[str, int]] = {}
                for qtype in tgifqa.FRAMEQA_TYPES:
                    dist = Counter(str(r.answer) for r in recs if r.answer_type == qtype)
                    by_type[qtype] = dict(dist.most_common(8))
                    by_type[qtype]["(distinct)"] = len(dist)
                entry[f"{split}_answers"] = by_type
            else:
                dist = Counter(int(r.answer) for r in recs)
                entry[f"{split}_answer_index"] = {str(i): dist[i] for i in range(spec.num_candidates)}
                cdist = Counter(r.candidates[r.answer] for r in recs)
                entry[f"{split}_answers"] = dict(cdist.most_common(8))
        if "train" in splits and "test" in splits and splits["train"] and splits["test"]:
            scores = {}
            for name in BASELINES:
                model = fit_baseline(name, splits["train"], seed=seed)
                scores[name] = score_task(task, splits["test"], model.predict(splits["test"]))
            entry["baselines"] = scores
            text = headline(task, scores["text-only"])
            if spec.target == "count":
                reference = headline(task, scores["majority"])
                limit = COUNT_MSE_RATIO * reference
                entry["rule"] = f"text-only MSE {text:.3f} must be >= {COUNT_MSE_RATIO} x majority MSE = {limit:.3f}"
                ok = text >= limit
            elif spec.target == "answer_word":
                reference = _type_prior_accuracy(splits["train"], splits["test"])
                entry["type_prior_accuracy"] = reference
                limit = reference + FRAMEQA_MARGIN
                entry["rule"] = (
                    f"text-only accuracy {text:.3f} must be <= per-type majority {reference:.3f} + "
                    f"{FRAMEQA_MARGIN} = {limit:.3f}"
                )
                ok = text <= limit
            else:
                limit = 1.0 / spec.num_candidates + MC_MARGIN
                entry["rule"] = f"text-only accuracy {text:.3f} must be <= chance 0.200 + {MC_MARGIN} = {limit:.3f}"
                ok = text <= limit
            entry["passed"] = bool(ok)
            report["checked"].append(task)
            report["passed"] = report["passed"] and bool(ok)
        else:
            entry["passed"] = None
            entry["rule"] = f"not checked: missing {' and '.join(entry['missing']) or 'records'} split"
        report["tasks"][task] = entry
    report["sibling_mentions"] = {s: sibling_mentions(loaded[s]) for s in ("train", "test") if loaded[s]}
    return report


def _format_report(report: dict) -> str:
    lines = [f"stqa synth --check {report['root']}"]
    for task, e in report["tasks"].items():
        target = get_task(task).target
        lines.append(f"\n[{task}] sizes {e['sizes']}" + (f"  missing: {', '.join(e['missing'])}" if e["missing"] else ""))
        for split in ("train", "test"):
            if f"{split}_answer_index" in e:
                lines.append(f"  {split} answer index: {e[f'{split}_answer_index']}")
            if f"{split}_types" in e:
                lines.append(f"  {split} question types: {e[f'{split}_types']}")
            if f"{split}_answers" in e:
                ans = e[f"{split}_answers"]
                if target == "answer_word":
                    for qtype, dist in ans.items():
                        lines.append(f"  {split} {qtype} answers: {dist}")
                else:
                    lines.append(f"  {split} answers: {ans}")
        for name, s in e.get("baselines", {}).items():
            if target == "count":
                lines.append(f"  {name:>9}: mse {s['mse']:.3f}  mse_raw {s['mse_raw']:.3f}  (n={s['n']})")
            elif target == "answer_word":
                bt = "  ".join(f"{t} {v:.3f}" if v is not None else f"{t} -" for t, v in s["by_type"].items())
                lines.append(f"  {name:>9}: accuracy {s['accuracy']:.3f}  ({bt}; n={s['n']})")
            else:
                lines.append(f"  {name:>9}: accuracy {s['accuracy']:.3f}  (n={s['n']})")
        verdict = {True: "PASS", False: "FAIL (text leaks the answer)", None: "SKIPPED"}[e["passed"]]
        lines.append(f"  {verdict}: {e['rule']}")
    for split, stats in report["sibling_mentions"].items():
        for task, s in stats.items():
            lines.append(
                f"\n{split} {task}: correct candidate named in a sibling question of the same GIF "
                f"{100 * s['correct']:.1f}% vs an average distractor {100 * s['distractor']:.1f}%"
            )
    lines.append(
        f"\nchecked: {', '.join(report['checked']) or 'nothing'}; "
        + ("PASS" if report["passed"] else "FAIL: a text-only model is far above chance")
    )
    return "\n".join(lines)


def run_check(root: Path, seed: int = 0, json_path: Path | None = None) -> int:
    """``stqa synth --check``: print the report; 0 = passed, 1 = leakage found, 2 = nothing to check."""
    try:
        report = check_dataset(root, seed=seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"stqa synth --check: {e}", file=sys.stderr)
        return 2
    print(_format_report(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if not report["checked"]:
        print("stqa synth --check: no task has both a Train and a Test file; nothing was checked", file=sys.stderr)
        return 2
    return 0 if report["passed"] else 1
