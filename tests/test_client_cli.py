"""`stqa ask` against an in-process server with the real Predictor: output, picture, TLS, token, errors."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from helpers import CANDIDATES, model_checkpoint, sample_videos
from PIL import Image
from stqa.server.background import ServerThread
from stqa.server.config import ServerConfig

from stqa.cli import main as stqa_main
from stqa.client import VideoQAClient


def _config(**overrides) -> ServerConfig:
    ckpt = model_checkpoint()
    base = dict(port=0, metrics_port=None, checkpoints=() if ckpt is None else (ckpt,), grace_s=5.0)
    base.update(overrides)
    return ServerConfig(**base)


@pytest.fixture(scope="module")
def server():
    with ServerThread(_config()) as s:
        yield s


def test_ask_prints_the_answer_and_draws_the_picture(server, tmp_path, capsys):
    video = sample_videos()[2]
    picture = tmp_path / "att.png"
    rc = stqa_main(["ask", str(video), "what does the blue square do ?", "--task", "action",
                    "--candidates", *CANDIDATES, "--server", server.address, "--attention-out", str(picture)])
    out = capsys.readouterr().out
    assert rc == 0, out
    answer = next(line for line in out.splitlines() if line.startswith("answer:")).split(":", 1)[1].strip()
    assert answer in CANDIDATES
    assert "timings:" in out and "frames:" in out and f"picture:  {picture}" in out
    image = np.asarray(Image.open(picture).convert("RGB"))
    assert image.shape[0] > 250 and image.shape[1] > 600
    assert image.std() > 10  # not a blank canvas


def test_ask_reports_server_errors_and_usage_errors(server, tmp_path, capsys):
    video = str(sample_videos()[0])
    assert stqa_main(["ask", video, "   ", "--task", "count", "--server", server.address]) == 1
    assert "INVALID_ARGUMENT: question is empty" in capsys.readouterr().err
    assert stqa_main(["ask", video, "q", "--candidates", *CANDIDATES, "--server", server.address]) == 1
    assert "FRAMEQA (inferred from the question; set task to override) takes no candidates" in capsys.readouterr().err
    assert stqa_main(["ask", str(tmp_path / "missing.gif"), "q", "--server", server.address]) == 2


def test_client_library_reuses_one_channel(server):
    with VideoQAClient(server.address) as client:
        info = client.model_info()
        replies = [client.answer(p, "how many times does it jump ?", "count") for p in sample_videos()[:3]]
    assert all(r.model_version == info.model_version for r in replies)
    with pytest.raises(ValueError, match="unknown task"):
        VideoQAClient(server.address).answer(b"x", "q", "dance")


def test_ask_over_tls_with_a_token(tmp_path, capsys, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    except FileNotFoundError:
        pytest.skip("openssl CLI not available to make a test certificate")
    with ServerThread(_config(tls_cert=cert, tls_key=key, auth_token="t0ken")) as s:
        base = ["ask", str(sample_videos()[0]), "what color is it ?", "--server", f"localhost:{s.port}",
                "--tls-ca", str(cert)]
        assert stqa_main(base) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert stqa_main([*base, "--auth-token", "t0ken"]) == 2  # never a flag value: ps shows it
        assert "--auth-token-file" in capsys.readouterr().err
        token_file = tmp_path / "token"
        token_file.write_text("t0ken\n")
        assert stqa_main([*base, "--auth-token-file", str(token_file)]) == 0
        assert "answer:" in capsys.readouterr().out
        monkeypatch.setenv("STQA_AUTH_TOKEN", "t0ken")
        assert stqa_main(base) == 0
