"""One version (issue 17): the package, its compiled extension, its metadata, the CLI and the server agree,
and all come from pyproject.toml's [project] version."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from stqa.server.background import ServerThread
from stqa.server.config import ServerConfig

import stqa
from stqa.v1 import video_qa_pb2 as pb
from stqa.v1 import video_qa_pb2_grpc as pb_grpc

tomllib = pytest.importorskip("tomllib")
packaging_version = pytest.importorskip("packaging.version")
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _declared() -> str:
    with open(PYPROJECT, "rb") as f:
        return tomllib.load(f)["project"]["version"]


def test_declared_version_is_normalized():
    # The extension gets the string as written, the metadata the normalized form: they match only if equal.
    declared = _declared()
    assert str(packaging_version.Version(declared)) == declared


def test_package_extension_and_metadata_agree():
    assert stqa.__version__ == stqa.build_info()["version"] == importlib.metadata.version("stqa") == _declared()


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "stqa", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"stqa {_declared()}"


class _Predictor:
    """Just enough of a Predictor for GetModelInfo."""

    tasks = ("count",)
    model_version = "fake-1"
    spec = SimpleNamespace(backbone="tiny", channels=8, num_frames=4, policy="uniform", image_size=32)
    num_frames = 4
    answer_vocab = ()


def test_server_reports_the_package_version():
    config = ServerConfig(host="127.0.0.1", port=0, metrics_port=None, grace_s=1.0)
    with ServerThread(config, loader=lambda path, device: _Predictor(), query_factory=SimpleNamespace) as server:
        with grpc.insecure_channel(server.address) as channel:
            info = pb_grpc.VideoQAStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert info.server_version == stqa.__version__ == _declared()
