"""The committed stubs in stqa/v1/ are exactly what scripts/gen_proto.py makes from protos/ now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _gen_proto():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_current(tmp_path):
    pytest.importorskip("grpc_tools")
    written = _gen_proto().generate(tmp_path)
    assert {p.name for p in written} == {"video_qa_pb2.py", "video_qa_pb2.pyi", "video_qa_pb2_grpc.py"}
    for fresh in written:
        committed = ROOT / fresh.relative_to(tmp_path)
        assert committed.is_file(), f"{committed} is missing: run `make proto` and commit"
        assert committed.read_bytes() == fresh.read_bytes(), f"{committed} is stale: run `make proto` and commit"


def test_stubs_import_as_package_modules():
    from stqa.v1 import video_qa_pb2, video_qa_pb2_grpc

    assert video_qa_pb2.DESCRIPTOR.package == "stqa.v1"
    assert video_qa_pb2_grpc.VideoQAStub is not None
    service = video_qa_pb2.DESCRIPTOR.services_by_name["VideoQA"]
    assert [m.name for m in service.methods] == ["Answer", "GetModelInfo"]
    assert video_qa_pb2.Task.Name(0) == "TASK_UNSPECIFIED"
