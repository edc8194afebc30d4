"""`stqa extract` end to end (tiny backbone, generated GIFs) and the HDF5 feature store."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from stqa.cli import main as stqa_main
from stqa.data.features import FeatureSpec, FeatureStore, FeatureWriter
from stqa.models.backbone import build_backbone
from stqa.video import decode_video, frames_to_tensor, sample_indices

T = 8


def gif_bytes(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).quantize(16) for _ in range(n)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


@pytest.fixture
def workspace(tmp_path: Path) -> dict:
    videos = tmp_path / "videos"
    annotations = tmp_path / "annotations"
    videos.mkdir()
    annotations.mkdir()
    (videos / "gif_long.gif").write_bytes(gif_bytes(20, 1))  # n > T: sampled
    (videos / "gif_short.gif").write_bytes(gif_bytes(5, 2))  # n < T: all frames, not padded
    (videos / "gif_test.gif").write_bytes(gif_bytes(9, 3))
    broken = gif_bytes(12, 4)
    (videos / "gif_broken.gif").write_bytes(broken[: len(broken) // 2])
    lines = ["gif_name\tquestion\tanswer\tvid_id\tkey",
             "gif_long\tHow many times does it spin ?\t3\tCOUNT1\t101",
             "gif_short\tHow many times does it jump ?\t0\tCOUNT2\t102",
             "gif_broken\tHow many times does it fall ?\t2\tCOUNT3\t103",
             "gif_missing\tHow many times does it run ?\t4\tCOUNT4\t104",
             "gif_long\tHow many times does it blink ?\t5\tCOUNT5\t101"]  # same GIF twice: decoded once
    (annotations / "Train_count_question.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    lines = ["gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription",
             "gif_test\twhat is spinning ?\ttop\t0\tFRAMEQA1\t105\ta top is spinning ."]
    (annotations / "Test_frameqa_question.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save(build_backbone("tiny").state_dict(), weights)
    return {"videos": videos, "annotations": annotations, "weights": weights, "out": tmp_path / "feats.h5"}


def extract(ws: dict, *extra: str, frames: int = T) -> int:
    return stqa_main(["extract", "--videos", str(ws["videos"]), "--annotations", str(ws["annotations"]),
                      "--backbone", "tiny", "--weights", str(ws["weights"]), "--out", str(ws["out"]),
                      "--frames", str(frames), "--batch-size", "6", *extra])


def test_extract_end_to_end(workspace: dict, capsys) -> None:
    assert extract(workspace) == 1  # two GIFs failed
    out = workspace["out"]
    failures = [json.loads(line) for line in Path(f"{out}.failures.jsonl").read_text().splitlines()]
    assert sorted((f["key"], f["gif_name"], f["error"]) for f in failures) == [
        (103, "gif_broken", "CorruptVideo"), (104, "gif_missing", "FileNotFoundError")]
    assert "truncated GIF" in next(f["message"] for f in failures if f["key"] == 103)
    err = capsys.readouterr().err
    # which weights were used comes first; the missing video is counted apart from the broken one
    assert err.startswith(f"stqa extract: tiny weights: {workspace['weights']} (given)\n")
    assert "5 to do (1 without a video in" in err
    assert f"2 GIFs failed (1 without a video in {workspace['videos']})" in err

    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["101", "102", "105"]  # nothing at all for the failed GIFs
        attrs = dict(f.attrs)
        assert attrs["backbone"] == "tiny" and attrs["channels"] == 128 and attrs["num_frames"] == T
        assert attrs["policy"] == "uniform" and attrs["image_size"] == 112 and attrs["format"] == "stqa-features/1"
        assert attrs["weights_hash"] == build_backbone("tiny", workspace["weights"]).weights_hash
        assert attrs["stqa_version"] and attrs["dtype"] == "float32"

    store = FeatureStore(out)
    assert store.spec == FeatureSpec("tiny", 128, T, "uniform", 112)
    assert store.keys() == [101, 102, 105] and 101 in store and 103 not in store and "x" not in store
    info = store.info(101)
    assert info["gif_name"] == "gif_long" and info["n_frames"] == 20 and info["length"] == T
    np.testing.assert_array_equal(info["indices"], sample_indices(20, T))
    short = store[102]
    assert short.shape == (5, 7, 7, 128) and store.info(102)["n_frames"] == 5  # never padded
    # the stored maps are exactly the backbone applied to the shared decode + transform path
    backbone = build_backbone("tiny", workspace["weights"]).eval()
    video = decode_video(workspace["videos"] / "gif_long.gif", T)
    with torch.no_grad():
        expected = backbone(frames_to_tensor(video.frames, 112)).numpy()
    np.testing.assert_allclose(store[101], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="no features for GIF key 103"):
        store[103]
    # the reader survives pickling (DataLoader workers) and reopens lazily
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone[105], store[105])
    store.close()
    clone.close()


def test_resume_skips_done_keys(workspace: dict, capsys) -> None:
    assert extract(workspace) == 1
    with h5py.File(workspace["out"], "r") as f:
        before = f["101"][()]
    (workspace["videos"] / "gif_missing.gif").write_bytes(gif_bytes(7, 5))  # fixed between runs
    capsys.readouterr()
    assert extract(workspace) == 1  # the broken GIF still fails
    err = capsys.readouterr().err
    assert "3 already in" in err and "2 to do" in err and "wrote 1 GIFs" in err
    failures = Path(f"{workspace['out']}.failures.jsonl").read_text().splitlines()
    assert [json.loads(x)["key"] for x in failures] == [103]  # the manifest describes the latest run
    with h5py.File(workspace["out"], "r") as f:
        assert sorted(f.keys()) == ["101", "102", "104", "105"]
        np.testing.assert_array_equal(f["101"][()], before)


def test_spec_mismatch_is_refused(workspace: dict, capsys) -> None:
    assert extract(workspace, "--split", "test") == 0
    assert not Path(f"{workspace['out']}.failures.jsonl").exists()
    size = workspace["out"].stat().st_size
    capsys.readouterr()
    assert extract(workspace, frames=T + 1) == 2
    assert "num_frames: 8 != 9" in capsys.readouterr().err
    assert extract(workspace, "--fp16") == 2
    assert "dtype: 'float32' != 'float16'" in capsys.readouterr().err
    torch.manual_seed(1)
    torch.save(build_backbone("tiny").state_dict(), workspace["weights"])
    assert extract(workspace) == 2
    assert "weights_hash" in capsys.readouterr().err
    assert workspace["out"].stat().st_size == size
    with h5py.File(workspace["out"], "r") as f:
        assert sorted(f.keys()) == ["105"]


def test_fp16_and_center_policy(workspace: dict) -> None:
    assert extract(workspace, "--fp16", "--policy", "center", "--tasks", "count") == 1
    store = FeatureStore(workspace["out"])
    assert store[101].dtype == np.float16 and 105 not in store  # frameqa not requested
    np.testing.assert_array_equal(store.info(101)["indices"], sample_indices(20, T, "center"))


def test_usage_errors(workspace: dict, tmp_path: Path, capsys) -> None:
    no_weights = ["extract", "--videos", str(workspace["videos"]), "--backbone", "resnet50",
                  "--out", str(tmp_path / "x.h5")]
    assert stqa_main([*no_weights, "--annotations", str(workspace["annotations"])]) == 2
    assert "--weights PATH is required" in capsys.readouterr().err
    args = ["extract", "--videos", str(workspace["videos"]), "--backbone", "tiny", "--out", str(tmp_path / "x.h5")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert stqa_main([*args, "--annotations", str(empty), "--weights", str(workspace["weights"])]) == 2
    assert "no annotation files" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_a_videos_folder_without_any_annotated_gif_fails_before_writing(workspace: dict, tmp_path: Path,
                                                                       capsys) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "unrelated.gif").write_bytes(gif_bytes(3, 9))
    assert extract(dict(workspace, videos=elsewhere)) == 2
    assert capsys.readouterr().err == (f"stqa extract: error: none of the 5 GIFs named in the annotations is in "
                                       f"{elsewhere}\n")
    assert not workspace["out"].exists() and not Path(f"{workspace['out']}.failures.jsonl").exists()


def test_writer_validation_and_interrupted_entries(tmp_path: Path) -> None:
    spec = FeatureSpec("tiny", 4, 3, "uniform", 112)
    path = tmp_path / "f.h5"
    with FeatureWriter(path, spec, "abc") as writer:
        writer.write(7, np.ones((2, 7, 7, 4)), gif_name="g", n_frames=2, indices=np.arange(2))
        with pytest.raises(ValueError, match="expected \\(3, 7, 7, 4\\)"):
            writer.write(8, np.ones((3, 7, 7, 5)), gif_name="g", n_frames=3, indices=np.arange(3))
        with pytest.raises(ValueError, match="1..3"):
            writer.write(8, np.ones((4, 7, 7, 4)), gif_name="g", n_frames=9, indices=np.arange(4))
        with pytest.raises(ValueError, match="NaN"):
            writer.write(8, np.full((1, 7, 7, 4), np.nan), gif_name="g", n_frames=1, indices=np.arange(1))
    with h5py.File(path, "a") as f:  # what a crash between data and attributes leaves behind
        f.create_dataset("9", data=np.zeros((1, 7, 7, 4), np.float32))
    assert FeatureStore(path).keys() == [7]  # incomplete entries are invisible to readers
    with FeatureWriter(path, spec, "abc") as writer:
        assert writer.done_keys() == {7}
    with h5py.File(path, "r") as f:
        assert "9" not in f  # and removed by the next writer, so they get redone
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="missing"):
        FeatureSpec.from_dict({"backbone": "tiny"})
    not_features = tmp_path / "other.h5"
    with h5py.File(not_features, "w") as f:
        f.attrs["something"] = 1
    with pytest.raises(ValueError, match="not a stqa feature file"):
        FeatureStore(not_features)
    with pytest.raises(FileNotFoundError):
        FeatureStore(tmp_path / "missing.h5")


def test_tiny_defaults_to_the_bundled_models_backbone(workspace: dict, tmp_path: Path, capsys) -> None:
    """`stqa synth` then `stqa extract --backbone tiny` needs no weights file: the bundled model carries one."""
    from stqa.checkpoint import file_sha256
    from stqa.inference import BUNDLED_MODEL
    from stqa.models.backbone import build_backbone

    out = tmp_path / "bundled.h5"
    code = stqa_main(["extract", "--videos", str(workspace["videos"]), "--annotations", str(workspace["annotations"]),
                      "--backbone", "tiny", "--out", str(out), "--frames", str(T), "--tasks", "count"])
    assert code == 1  # the fixture's corrupt GIF fails; the others are written
    assert capsys.readouterr().err.startswith(
        f"stqa extract: tiny weights: {BUNDLED_MODEL} (the bundled model's trained backbone)\n")
    store = FeatureStore(out)
    with h5py.File(out, "r") as f:
        assert f.attrs["weights_hash"] == file_sha256(BUNDLED_MODEL / "model.safetensors")
    backbone = build_backbone("tiny", BUNDLED_MODEL).eval()
    assert backbone.weights_hash == file_sha256(BUNDLED_MODEL / "model.safetensors")
    assert len(store.keys()) >= 1


def test_checkpoint_without_backbone_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from stqa.models.backbone import build_backbone

    (tmp_path / "config.json").write_text("{}")
    save_file({"encoder.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="has no backbone"):
        build_backbone("tiny", tmp_path)
