"""How confident is a model on questions it cannot read? (issue 22, "answers that admit what they don't know")

Renders ``--videos`` synthetic videos of a seed the bundled model never trained on (default 7; it was
trained on seed 0), and asks each one fixed set of out-of-vocabulary questions (FrameQA and count, naming
things the synthetic world has no word for) next to its own in-vocabulary test questions. Prints, per
group, how many answers came with confidence >= 0.9 and >= 0.5, the median confidence, and (for the
in-vocabulary questions) the accuracy, as JSON.

    python scripts/measure_oov_confidence.py [--checkpoint DIR] [--videos 40] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from stqa.data import synth
from stqa.inference import Predictor, Query

OOV_QUESTIONS: dict[str, tuple[str, ...]] = {
    "frameqa": ("is there a dog in the video ?", "what colour is the car ?", "where is the elephant ?",
                "what is the man holding ?", "what animal is on the left ?"),
    "count": ("how many times does the purple elephant jump ?", "how many times does the dog bark ?",
              "how many times does the man nod ?", "how many times does the car turn ?"),
}


def _summary(confidences: list[float], correct: list[bool] | None = None) -> dict:
    c = np.asarray(confidences)
    out = {"n": int(c.size), "conf_ge_0.9": round(float((c >= 0.9).mean()), 3),
           "conf_ge_0.5": round(float((c >= 0.5).mean()), 3), "median_conf": round(float(np.median(c)), 3)}
    if correct is not None:
        out["accuracy"] = round(float(np.mean(correct)), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: the bundled model")
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    predictor = Predictor.load(args.checkpoint)
    size = int(predictor.spec.image_size)
    groups: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.videos):
            scene, questions = synth.sample_video(args.seed, index)
            path = Path(tmp) / f"{index}.gif"
            synth.write_gif(synth.render_frames(scene, size), path)
            video = predictor.prepare_video(path)
            for task, texts in OOV_QUESTIONS.items():
                for text in texts:
                    (p,) = predictor.predict([Query(task, text, video)])
                    assert p.unknown_words, text  # every question here must hold an unknown word
                    groups.setdefault(f"{task} out-of-vocabulary", {"conf": []})["conf"].append(p.confidence)
                for q in questions:
                    if q.task != task:
                        continue
                    (p,) = predictor.predict([Query(task, q.fields["question"], video)])
                    g = groups.setdefault(f"{task} in-vocabulary", {"conf": [], "ok": []})
                    g["conf"].append(p.confidence)
                    g["ok"].append(p.answer.strip().lower() == q.fields["answer"].strip().lower())
    print(json.dumps({name: _summary(g["conf"], g.get("ok")) for name, g in sorted(groups.items())}))


if __name__ == "__main__":
    main()
