"""The leakage audit (``stqa synth --check``): answer distributions and blind baselines per task for
any TGIF-QA files, synthetic or real. A set passes when a model that reads only the question text stays
near chance (see docs/synthetic.md); on the real TGIF-QA Action files it does not. The text-only score
comes with its sample size and 95% interval, and a task whose interval straddles the threshold is
INCONCLUSIVE (too few test questions to tell), not PASS or FAIL.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from stqa.data import tgifqa
from stqa.data.tgifqa import tokenize
from stqa.metrics import headline, score_task
from stqa.tasks import MC_TASKS, TASK_NAMES
from stqa.tasks import get as get_task

# A blind text-only model may not beat these references by more than the margins below (see
# docs/synthetic.md): multiple choice: accuracy > 1/5 + 0.10; frameqa: accuracy > (accuracy of predicting
# the most frequent train answer of each question type) + 0.10; count: MSE < 0.8 x the MSE of the mean.
MC_MARGIN = 0.10
FRAMEQA_MARGIN = 0.10
COUNT_MSE_RATIO = 0.8
Z_95 = 1.959964  # two-sided 95% quantile of the standard normal

#: How a task's verdict is printed.
VERDICT_TEXT = {"PASS": "PASS", "FAIL": "FAIL (text leaks the answer)",
                "INCONCLUSIVE": "INCONCLUSIVE (the interval straddles the threshold)", "SKIPPED": "SKIPPED"}
#: Exit statuses of ``stqa synth --check``.
EXIT_PASS, EXIT_FAIL, EXIT_NOTHING_CHECKED, EXIT_INCONCLUSIVE = 0, 1, 2, 3


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (95% by default). Unlike the normal
    approximation it stays inside [0, 1] and keeps its width at 0 or n successes and for small n."""
    if n <= 0:
        raise ValueError(f"an interval needs at least one observation, got n={n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], z: float = Z_95) -> tuple[float, float]:
    """Normal-approximation interval of a mean (mean +- z s / sqrt(n), s the sample standard deviation);
    unbounded for fewer than two values."""
    n = len(values)
    if n < 2:
        return -math.inf, math.inf
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean - z * sd / math.sqrt(n), mean + z * sd / math.sqrt(n)


def decide(interval: tuple[float, float], limit: float, higher_is_clean: bool) -> str:
    """PASS when the whole interval is on the clean side of ``limit``, FAIL when it is wholly on the
    leaking side, INCONCLUSIVE when it straddles the limit (the sample cannot tell)."""
    lo, hi = interval
    clean, leaking = (lo >= limit, hi < limit) if higher_is_clean else (hi <= limit, lo > limit)
    return "PASS" if clean else "FAIL" if leaking else "INCONCLUSIVE"


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

    Returns ``{"tasks": {task: {...}}, "sibling_mentions": {...}, "checked": [tasks], "verdict": str,
    "passed": bool}``. Each checked task has ``n`` (test questions), ``interval`` (95% interval of the
    text-only score), ``limit`` and ``verdict`` (PASS, FAIL or INCONCLUSIVE; ``passed`` is True, False or
    None). The report's ``verdict`` is FAIL if any task fails, else INCONCLUSIVE if any is, else PASS, and
    NOT CHECKED when no task could be; ``passed`` is True only for PASS. A task whose Train or Test file
    is missing is reported but not checked (blind baselines must be fit on Train and scored on Test). The
    answer distributions are the labels as :func:`stqa.data.tgifqa.load` reads them (training reads the
    same files the same way); a folder without any annotation file is a ``FileNotFoundError``.
    """
    # Imported here, not at the top: the baselines need torch, which `stqa synth` (generation) must not load.
    from stqa.data.baselines import BASELINES, fit_baseline

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    if not any(tgifqa.available_tasks(root, split) for split in ("train", "test")):
        names = [tgifqa.annotation_filename(t, s) for t in TASK_NAMES for s in ("train", "test")]
        raise FileNotFoundError(f"{root} holds no TGIF-QA annotation file (none of {', '.join(names)})")
    report: dict = {"root": str(root), "tasks": {}, "checked": []}
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
                dist = Counter(int(r.answer) for r in recs)  # as read: 0 stays 0 (scored as 1)
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
            scores, predictions = {}, {}
            for name in BASELINES:
                model = fit_baseline(name, splits["train"], seed=seed)
                predictions[name] = model.predict(splits["test"])
                scores[name] = score_task(task, splits["test"], predictions[name])
            entry["baselines"] = scores
            text = headline(task, scores["text-only"])
            n = len(splits["test"])
            if spec.target == "count":
                # the interval of the MSE from its terms, each item's own squared error
                errors = [score_task(task, [r], [p])["mse"]
                          for r, p in zip(splits["test"], predictions["text-only"], strict=True)]
                interval, method = mean_interval(errors), "normal approximation, 95%"
                reference = headline(task, scores["majority"])
                limit = COUNT_MSE_RATIO * reference
                rule = f"text-only MSE {text:.3f} must be >= {COUNT_MSE_RATIO} x majority MSE = {limit:.3f}"
            else:
                interval, method = wilson_interval(round(text * n), n), "Wilson, 95%"
                if spec.target == "answer_word":
                    reference = _type_prior_accuracy(splits["train"], splits["test"])
                    entry["type_prior_accuracy"] = reference
                    limit = reference + FRAMEQA_MARGIN
                    rule = (f"text-only accuracy {text:.3f} must be <= per-type majority {reference:.3f} + "
                            f"{FRAMEQA_MARGIN} = {limit:.3f}")
                else:
                    limit = 1.0 / spec.num_candidates + MC_MARGIN
                    rule = f"text-only accuracy {text:.3f} must be <= chance 0.200 + {MC_MARGIN} = {limit:.3f}"
            verdict = decide(interval, limit, higher_is_clean=spec.target == "count")
            bounds = [round(v, 4) if math.isfinite(v) else None for v in interval]  # JSON has no infinity
            entry.update(n=n, interval=bounds, interval_method=method,
                         limit=round(limit, 4), verdict=verdict, passed={"PASS": True, "FAIL": False}.get(verdict),
                         rule=f"{rule} (95% interval {interval[0]:.3f}..{interval[1]:.3f}, n={n})")
            report["checked"].append(task)
        else:
            entry["passed"] = None
            entry["verdict"] = "SKIPPED"
            entry["rule"] = f"not checked: missing {' and '.join(entry['missing']) or 'records'} split"
        report["tasks"][task] = entry
    verdicts = {report["tasks"][t]["verdict"] for t in report["checked"]}
    report["verdict"] = next((v for v in ("FAIL", "INCONCLUSIVE", "PASS") if v in verdicts), "NOT CHECKED")
    report["passed"] = report["verdict"] == "PASS"
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
        lines.append(f"  {VERDICT_TEXT[e['verdict']]}: {e['rule']}")
    for split, stats in report["sibling_mentions"].items():
        for task, s in stats.items():
            lines.append(
                f"\n{split} {task}: correct candidate named in a sibling question of the same GIF "
                f"{100 * s['correct']:.1f}% vs an average distractor {100 * s['distractor']:.1f}%"
            )
    summary = {
        "PASS": "PASS",
        "FAIL": "FAIL: a text-only model is far above chance",
        "INCONCLUSIVE": "INCONCLUSIVE: too few test questions to tell a leak from chance (no task failed)",
        "NOT CHECKED": "no verdict",
    }[report["verdict"]]
    lines.append(f"\nchecked: {', '.join(report['checked']) or 'nothing'}; {summary}")
    return "\n".join(lines)


def run_check(root: Path, seed: int = 0, json_path: Path | None = None) -> int:
    """``stqa synth --check``: print the report; exit 0 = passed, 1 = leakage found, 2 = nothing to check
    (or bad input), 3 = inconclusive (no task failed, but some test split is too small to decide)."""
    try:
        report = check_dataset(root, seed=seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"stqa synth --check: {e}", file=sys.stderr)
        return EXIT_NOTHING_CHECKED
    print(_format_report(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if not report["checked"]:
        print("stqa synth --check: no task has both a Train and a Test file; nothing was checked", file=sys.stderr)
        return EXIT_NOTHING_CHECKED
    return {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL, "INCONCLUSIVE": EXIT_INCONCLUSIVE}[report["verdict"]]
