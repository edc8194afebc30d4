"""The task inferred from the question (``stqa.tasks.infer_task``): TGIF-QA's and the synthetic
benchmark's templates, the measured agreement on the real annotation files (with ``STQA_TGIFQA_ROOT``),
and the service answering without a task over a real port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import model_checkpoint, sample_videos
from stqa.server.background import ServerThread
from stqa.server.config import ServerConfig

from stqa import tasks
from stqa.cli import main as stqa_main
from stqa.client import VideoQAClient
from stqa.data import synth, tgifqa
from stqa.v1 import video_qa_pb2 as pb

#: The agreement the rule must reach on every task and split of the real annotation files.
MIN_AGREEMENT = 0.99


@pytest.mark.parametrize("question, task", [
    ("How many times does the man nod ?", "count"),
    ("how many times does the cat jump on the bed ?", "count"),
    ("What does the woman do 4 times ?", "action"),
    ("what does the man do 2 times ?", "action"),
    ("what do the girls do 3 times ?", "action"),
    ("What does the square do once ?", "action"),
    ("what does the circle do twice ?", "action"),
    ("What does the man do before turn body to left ?", "transition"),
    ("what does the woman do after blink eyes ?", "transition"),
    ("what does he do after he jumps two times ?", "transition"),  # transition wins over action
    ("What does the square do after it jumps ?", "transition"),
    ("what is the color of the car ?", "frameqa"),
    ("how many squares are there ?", "frameqa"),  # "how many" without "times" is a number question
    ("what do the group of four men play together all at once ?", "frameqa"),
    ("", "frameqa"),
])
def test_templates(question, task):
    assert tasks.infer_task(question) == task


def test_not_a_string_is_an_error():
    with pytest.raises(ValueError, match="must be a string"):
        tasks.infer_task(None)  # type: ignore[arg-type]


def test_every_synthetic_question_is_inferred_right():
    """The synthetic benchmark's templates (stqa.data.synth): every question of 300 generated videos."""
    wrong, total = [], 0
    for index in range(300):
        _, questions = synth.sample_video(11, index)
        for q in questions:
            total += 1
            if tasks.infer_task(q.fields["question"]) != q.task:
                wrong.append((q.task, q.fields["question"]))
    assert total > 300 * 6
    assert not wrong, wrong[:5]


def agreement_table(root: Path) -> list[tuple[str, str, int, int]]:
    """(split, task, questions, inferred right) for every annotation file present under ``root``."""
    rows = []
    for split in tgifqa.SPLITS:
        for task in tasks.TASK_NAMES:
            if not (root / tgifqa.annotation_filename(task, split)).is_file():
                continue
            records = tgifqa.load(root, task, split)
            right = sum(tasks.infer_task(r.question) == task for r in records)
            rows.append((split, task, len(records), right))
    return rows


def test_agreement_on_the_real_annotation_files():
    root = os.environ.get("STQA_TGIFQA_ROOT")
    if not root:
        pytest.skip("STQA_TGIFQA_ROOT is not set: it names the directory of TGIF-QA's *_question.csv files")
    rows = agreement_table(Path(root))
    assert rows, f"no TGIF-QA annotation files in {root}"
    print("\n| split | task | questions | inferred right | agreement |\n|---|---|---|---|---|")
    for split, task, n, right in rows:
        print(f"| {split} | {task} | {n:,} | {right:,} | {100 * right / n:.2f}% |")
    low = [(split, task, right / n) for split, task, n, right in rows if right / n < MIN_AGREEMENT]
    assert not low, low


# -- over a real port ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    ckpt = model_checkpoint()
    config = ServerConfig(port=0, metrics_port=None, checkpoints=() if ckpt is None else (ckpt,), grace_s=5.0)
    with ServerThread(config) as s:
        yield s


@pytest.mark.parametrize("question, task", [
    ("how many times does the square jump ?", pb.COUNT),
    ("what color is the jumping shape ?", pb.FRAMEQA),
])
def test_the_server_infers_the_task(server, question, task):
    video = sample_videos()[0]
    with VideoQAClient(server.address) as client:
        inferred = client.answer(video, question)
        explicit = client.answer(video, question, tasks.from_proto(task).name)
    assert inferred.task == task and inferred.task_inferred
    assert explicit.task == task and not explicit.task_inferred
    assert inferred.answer == explicit.answer


def test_an_explicit_task_overrides_the_inference(server):
    with VideoQAClient(server.address) as client:
        response = client.answer(sample_videos()[0], "how many times does the square jump ?", "frameqa")
    assert response.task == pb.FRAMEQA and not response.task_inferred


def test_stqa_ask_needs_no_task(server, capsys):
    rc = stqa_main(["ask", str(sample_videos()[1]), "how many times does the circle grow ?",
                    "--server", server.address])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "task COUNT (inferred from the question)" in out
