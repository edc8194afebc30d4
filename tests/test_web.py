"""``stqa web`` through its HTTP API (gradio_client), against real processes on real loopback ports.

One page with its own in-process server answers the bundled examples (the bundled model gets them right);
another page asks a separate ``stqa serve`` with a tiny video limit, then finds it gone: every failure
must come back as a sentence, never a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stqa.server.testing import ServeProcess
from web_helpers import EXAMPLES, WebProcess, require_gradio

require_gradio()

from gradio_client import Client, handle_file  # noqa: E402 - after the skip: needs the web extra
from gradio_client.exceptions import AppError  # noqa: E402

EXAMPLE_LIST = json.loads((EXAMPLES / "examples.json").read_text())["examples"]


@pytest.fixture(scope="module")
def web():
    page = WebProcess()
    yield page
    assert page.terminate() == 0, "".join(page.stderr_lines[-30:])


@pytest.fixture(scope="module")
def client(web):
    return Client(web.url, verbose=False)


def ask(client: Client, video: Path, question: str, task: str = "auto", candidates: str = ""):
    """One question through the page's API: (summary, top_k, timings, picture path, plot)."""
    return client.predict(handle_file(str(video)), question, task, candidates, api_name="/ask")


def decode_ms(timings: str) -> float:
    """The server's decode time out of the page's timings line."""
    return float(re.search(r"decode ([0-9.]+) ms", timings).group(1))


def refusal(client: Client, *args, **kwargs) -> str:
    """The sentence the page shows for a question it cannot answer."""
    with pytest.raises(AppError) as info:
        ask(client, *args, **kwargs)
    message = str(info.value)
    assert "Traceback" not in message and "File \"" not in message, message
    return message


def test_help_lists_web_without_importing_gradio():
    code = ("import sys, stqa.cli; stqa.cli.build_parser(); "
            "print('web' in stqa.cli.COMMANDS, 'gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_page_is_served_and_self_contained(web):
    assert "<html" in web.get()
    # No share link, no analytics: the page's config says so.
    config = json.loads(web.get("config"))
    assert config["title"].startswith("stqa")
    assert config.get("share_url") in (None, "")
    assert config.get("analytics_enabled") is False
    assert not [line for line in web.stdout_lines + web.stderr_lines if "gradio.live" in line]


@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=[e["task"] for e in EXAMPLE_LIST])
def test_bundled_examples_answer_with_task_inferred(client, example):
    summary, top_k, timings, picture, plot = ask(client, EXAMPLES / example["video"], example["question"],
                                                 "auto", ", ".join(example["candidates"]))
    assert summary.startswith(f"## {example['truth']}\n"), summary
    assert f"task **{example['task']}** (inferred from the question)" in summary
    assert "confidence **" in summary and "model `stqa-" in summary
    assert top_k["label"] == example["truth"]
    scores = [c["confidence"] for c in top_k["confidences"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    if example["candidates"]:
        assert {c["label"] for c in top_k["confidences"]} == set(example["candidates"])
    assert "total" in timings and "round trip" in timings
    with Image.open(picture) as image:  # the attention strip: one tile per sampled frame, wide
        assert image.format == "PNG" and image.width > 600 and image.height > 300
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/png;base64,")


def test_a_follow_up_question_uses_the_server_cache(client, tmp_path):
    video = tmp_path / "fresh.gif"  # bytes no one sent before: the first question must decode them
    rng = np.random.default_rng(7)
    frames = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(20)]
    frames[0].save(video, save_all=True, append_images=frames[1:], duration=80)
    *_, first, _, _ = ask(client, video, "how many times does the red circle jump ?")
    *_, again, _, _ = ask(client, video, "what color is the jumping shape ?")
    assert "cache" not in first and decode_ms(first) >= 1.0, first  # a real decode takes milliseconds
    assert "answered from its cache" in again and decode_ms(again) < 1.0, again


def test_words_the_model_does_not_know_are_a_warning_on_the_page(client):
    example = next(e for e in EXAMPLE_LIST if e["task"] == "frameqa")
    summary, *_ = ask(client, EXAMPLES / example["video"], "is there a dog on the skateboard ?", "frameqa")
    assert "does not know these words" in summary
    assert "`dog`" in summary and "`skateboard`" in summary
    known, *_ = ask(client, EXAMPLES / example["video"], example["question"], "auto")
    assert "does not know" not in known


def test_task_override_wins_over_inference(client):
    example = EXAMPLE_LIST[0]  # a count question
    summary, top_k, *_ = ask(client, EXAMPLES / example["video"], example["question"], "frameqa")
    assert "task **frameqa**" in summary and "inferred" not in summary
    assert len(top_k["confidences"]) == 5  # frameqa ranks the top 5 words; count has one entry


def test_mistakes_are_sentences(client, tmp_path):
    gif = EXAMPLES / EXAMPLE_LIST[0]["video"]
    assert refusal(client, gif, "   ").startswith("Type a question about the video")
    assert refusal(client, gif, "how many times does the blue cross flash ?", "count", "a, b, c, d, e") \
        .startswith("Candidates are only for multiple-choice questions (action, transition), not count")
    assert refusal(client, gif, "what color is the growing shape ?", "auto", "a, b").startswith(
        "The server could not answer this:")
    broken = tmp_path / "broken.gif"
    broken.write_bytes(gif.read_bytes()[:300])  # cut inside the first image
    message = refusal(client, broken, "what color is the growing shape ?")
    assert message.startswith("The server could not answer this: video rejected:"), message
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    # Gradio refuses it itself, by the upload box's file types (the page's own check is behind it).
    message = refusal(client, text, "what color is the growing shape ?")
    assert message.startswith("Invalid file type") and ".gif" in message and ".mov" in message, message


def test_limits_and_a_server_that_goes_away(tmp_path):
    """`stqa web --server`: the server's video limit is a sentence before upload; so is the server gone."""
    small = tmp_path / "small.gif"  # under the limit: this one is sent
    frames = [Image.new("RGB", (16, 16), (40 * i, 0, 0)) for i in range(4)]
    frames[0].save(small, save_all=True, append_images=frames[1:], duration=100)
    serve = ServeProcess("--metrics-port", "-1", "--max-video-mb", "0.005")  # 5 KiB: the examples are ~9.5 KiB
    web = None
    try:
        web = WebProcess("--server", serve.address)
        assert web.grpc_address == serve.address
        client = Client(web.url, verbose=False)
        gif = EXAMPLES / EXAMPLE_LIST[0]["video"]
        message = refusal(client, gif, "how many times does the blue cross flash ?")
        assert message.startswith("The video is 9.4 KiB; this server takes videos up to 5.1 KiB"), message
        assert serve.terminate() == 0
        message = refusal(client, small, "how many times does the blue cross flash ?")
        assert message.startswith(f"No stqa server answers at {serve.address}"), message
    finally:
        serve.terminate()
        if web is not None:
            assert web.terminate() == 0, "".join(web.stderr_lines[-30:])


def test_server_down_at_start_is_a_warning_not_a_crash():
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    web = WebProcess("--server", f"127.0.0.1:{port}")
    try:
        assert any("no stqa server answers" in line for line in web.stderr_lines)
        assert f"No stqa server answers at 127.0.0.1:{port}" in web.get("config")  # the page's header says so
    finally:
        assert web.terminate() == 0
