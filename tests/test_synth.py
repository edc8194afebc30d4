"""`stqa synth`: determinism, TGIF-QA file format, GIF contents, answer/scene consistency, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stqa.cli import main as cli_main
from stqa.data import synth, tgifqa
from stqa.video.decode import decode_video

N_VIDEOS = 10
SEED = 7


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_a")
    synth.generate(out, N_VIDEOS, SEED)
    return out


def _rgb_frames(scene: synth.Scene, size: int) -> np.ndarray:
    """The scene's rendered frames as uint8 RGB ``[t, H, W, 3]``."""
    return np.stack([np.asarray(im.convert("RGB")) for im in synth.render_frames(scene, size)])


def _rendered(n: int) -> Iterator[tuple[synth.Scene, list, np.ndarray]]:
    """(scene, questions, RGB frames at the default size) of videos ``0..n-1`` of seed ``SEED``."""
    cfg = synth.SynthConfig()
    for index in range(n):
        scene, questions = synth.sample_video(SEED, index, cfg)
        yield scene, questions, _rgb_frames(scene, cfg.size)


def _drawn_in(frames: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Per-pixel mask of where ``rgb`` is drawn."""
    return np.all(frames == np.array(rgb, dtype=np.uint8), axis=-1)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(synth_dir, tmp_path):
    synth.generate(tmp_path, N_VIDEOS, SEED)
    a, b = _files(synth_dir), _files(tmp_path)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.endswith(".gif")]) == N_VIDEOS
    for name in a:
        assert a[name] == b[name], name


def test_different_seed_differs(synth_dir, tmp_path):
    synth.generate(tmp_path, N_VIDEOS, SEED + 1)
    a, b = _files(synth_dir), _files(tmp_path)
    for name in ("Train_count_question.csv", "Test_frameqa_question.csv"):
        assert a[name] != b[name]
    gifs_a = [v for k, v in sorted(a.items()) if k.endswith(".gif")]
    gifs_b = [v for k, v in sorted(b.items()) if k.endswith(".gif")]
    assert all(x != y for x, y in zip(gifs_a, gifs_b, strict=True))


def test_files_have_the_tgifqa_format(synth_dir):
    for split in synth.SPLITS:
        for task in tgifqa.TASKS:
            raw = (synth_dir / tgifqa.annotation_filename(task, split)).read_bytes()
            assert raw.endswith(b"\r\n")
            lines = raw.split(b"\r\n")[:-1]
            assert all(b"\n" not in line and b"\r" not in line for line in lines)
            assert lines[0].decode().split("\t") == list(tgifqa.columns(task))
            assert all(line.count(b"\t") == len(tgifqa.columns(task)) - 1 for line in lines)


def _all_records(root: Path, split: str | None = None) -> list[tgifqa.QARecord]:
    splits = [split] if split else ["train", "test"]
    return [r for s in splits for t in tgifqa.TASKS for r in tgifqa.load(root, t, s)]


def test_loader_reads_consistent_records(synth_dir):
    records = _all_records(synth_dir)
    key_of: dict[str, int] = {}
    for r in records:
        assert key_of.setdefault(r.gif_name, r.key) == r.key, "same GIF must have the same key in every task"
    assert len(key_of) == N_VIDEOS and len(set(key_of.values())) == N_VIDEOS
    per_gif = Counter((r.gif_name, r.task) for r in records)
    assert all(per_gif[(g, t)] == n for g in key_of for t, n in {"action": 2, "transition": 2, "frameqa": 4}.items())
    assert {per_gif[(g, "count")] for g in key_of} == {1, 2}  # one per shape except the action questions' shape
    for index in range(N_VIDEOS):
        scene, _ = synth.sample_video(SEED, index)
        assert per_gif[(synth.gif_name_for(SEED, index), "count")] == len(scene.objects) - 1
    prefixes = {"count": "COUNT", "action": "ACTION", "transition": "TRANS", "frameqa": "FRAMEQA"}
    for task in tgifqa.TASKS:
        ids = [r.qid for r in records if r.task == task]
        assert len(set(ids)) == len(ids)
        assert all(re.fullmatch(prefixes[task] + r"\d+", q) for q in ids)
    for r in records:
        if r.task == "count":
            assert isinstance(r.answer, int) and 1 <= r.answer <= 6
        elif r.is_multiple_choice:
            assert 0 <= r.answer <= 4 and len(set(r.candidates)) == 5
            assert set(r.candidates) <= set(synth.ACTIONS)
        else:
            expected = {"object": synth.SHAPES, "number": synth.NUMBER_WORDS, "color": tuple(synth.COLORS),
                        "location": synth.ZONE_NAMES}[r.answer_type]
            assert r.answer in expected
    assert {r.answer_type for r in records if r.task == "frameqa"} == set(tgifqa.FRAMEQA_TYPES)
    meta = json.loads((synth_dir / "synth.json").read_text())
    assert meta["seed"] == SEED and meta["n_videos"] == N_VIDEOS


def test_train_and_test_are_disjoint_by_gif(synth_dir):
    train = {r.gif_name for r in _all_records(synth_dir, "train")}
    test = {r.gif_name for r in _all_records(synth_dir, "test")}
    assert train and test and not train & test
    assert len(test) == round(0.2 * N_VIDEOS)
    assert len(train | test) == N_VIDEOS


def test_gifs_decode_losslessly_with_the_expected_frames(synth_dir):
    cfg = synth.SynthConfig()
    for index in range(N_VIDEOS):
        scene, _ = synth.sample_video(SEED, index, cfg)
        path = synth_dir / "gifs" / f"{synth.gif_name_for(SEED, index)}.gif"
        video = decode_video(path)
        assert video.n_frames == scene.n_frames
        assert cfg.min_frames <= video.n_frames <= cfg.max_frames
        assert (video.width, video.height) == (cfg.size, cfg.size)
        expected = _rgb_frames(scene, cfg.size)
        np.testing.assert_array_equal(video.frames, expected)


def test_rendered_pixels_follow_the_script():
    """Each shape's own colour shows where, how big and whether the script says it is."""
    cfg = synth.SynthConfig()
    seen = Counter()
    for scene, _, frames in _rendered(4):
        rest_area = {}
        for obj in scene.objects:
            mask = _drawn_in(frames, synth.COLORS[obj.color])
            for t in range(scene.n_frames):
                x, y, scale, visible, flash = synth.object_state(obj, t)
                pixels = np.argwhere(mask[t])
                if not visible or flash:
                    assert len(pixels) == 0
                    if flash:
                        white = _drawn_in(frames[t], synth.FLASH_RGB)
                        r = synth.BASE_RADIUS * cfg.size
                        cx, cy = round(x * cfg.size), round(y * cfg.size)
                        box = white[int(cy - r) : int(cy + r) + 1, int(cx - r) : int(cx + r) + 1]
                        assert box.mean() > 0.35  # the shape itself turned white (others may flash too)
                    seen["flash" if flash else "blink"] += 1
                    continue
                cy, cx = pixels.mean(axis=0)
                r = synth.BASE_RADIUS * cfg.size * scale
                assert abs(cx - x * cfg.size) < 1.0 + 0.1 * r
                assert abs(cy - y * cfg.size) < 1.0 + 0.3 * r  # a triangle's centroid sits below its centre
                if scale == 1.0:
                    rest_area.setdefault(obj.name, len(pixels))
                else:
                    ratio = len(pixels) / rest_area.get(obj.name, np.pi * (synth.BASE_RADIUS * cfg.size) ** 2)
                    assert scale**2 * 0.6 < ratio < scale**2 * 1.5
                    seen["scaled"] += 1
    assert seen["flash"] and seen["blink"] and seen["scaled"]


def _parse(text: str, names: dict[str, synth.SceneObject]):
    for name, obj in names.items():
        if f" {name} " in text:
            return obj
    raise AssertionError(f"no object named in {text!r}")


def test_answers_are_consistent_with_the_scene():
    cfg = synth.SynthConfig()
    verb_of = {**{v: a for a, v in synth.VERB_3S.items()}, **{v: a for a, v in synth.VERB_ING.items()},
               **{a: a for a in synth.ACTIONS}}
    for index in range(60):
        scene, questions = synth.sample_video(SEED, index, cfg)
        objs = {o.name: o for o in scene.objects}
        counted: set[str] = set()
        asked: set[str] = set()
        assert len({o.color for o in scene.objects}) == len(scene.objects)
        assert len({o.zone for o in scene.objects}) == len(scene.objects)
        assert sum(o.end_zone is not None for o in scene.objects) == 1
        assert max(o.end for o in scene.objects) + synth.TAIL_MIN <= scene.n_frames <= cfg.max_frames
        for q in questions:
            f, text = q.fields, q.fields["question"]
            words = text.rstrip(" ?").split()
            if q.task == "count":
                obj, action = _parse(text, objs), verb_of[words[-1]]
                assert [s.reps for s in obj.segments if s.action == action] == [int(f["answer"])]
                counted.add(obj.name)
            elif q.task in ("action", "transition"):
                obj = _parse(text, objs)
                cands = [f[f"a{i}"] for i in range(1, 6)]
                answer = cands[int(f["answer"])]
                acts = [s.action for s in obj.segments]
                if q.task == "action":
                    m = 1 if words[-1] == "once" else int(words[-2])
                    assert [s.action for s in obj.segments if s.reps == m] == [answer]
                    asked.add(obj.name)
                else:
                    named = verb_of[words[-1]]
                    i = acts.index(named)
                    assert answer == (acts[i + 1] if "after" in words else acts[i - 1])
                    assert named not in cands
            else:
                qtype = synth.FRAMEQA_TYPES[int(f["type"])]
                if qtype in ("object", "color"):
                    action = verb_of[next(w for w in words if w.endswith("ing"))]
                    doers = [o for o in scene.objects if action in (s.action for s in o.segments)]
                    assert len(doers) == 1
                    assert f["answer"] == (doers[0].shape if qtype == "object" else doers[0].color)
                elif qtype == "number":
                    shape = next(s for s in synth.SHAPES if synth.SHAPE_PLURAL[s] in words)
                    n = sum(o.shape == shape for o in scene.objects)
                    assert f["answer"] == synth.NUMBER_WORDS[n - 1]
                else:
                    obj = _parse(text, objs)
                    assert f["answer"] == (obj.zone if words[-1] == "start" else obj.final_zone)
        # Count questions cover every shape but the one the action questions are about.
        assert len(asked) == 1 and counted == set(objs) - asked


def test_frameqa_object_and_color_are_answerable_from_one_frame():
    """As in TGIF-QA, some single frame shows both the asked event and the asked attribute of its doer."""
    asked = Counter()
    for index, (scene, questions, frames) in enumerate(_rendered(40)):
        for q in questions:
            qtype = synth.FRAMEQA_TYPES[int(q.fields["type"])] if q.task == "frameqa" else None
            if qtype not in ("object", "color"):
                continue
            verb = next(w for w in q.fields["question"].split() if w.endswith("ing"))
            action = next(a for a, v in synth.VERB_ING.items() if v == verb)
            asked[action] += 1
            (doer,) = [o for o in scene.objects if action in (s.action for s in o.segments)]
            # object: the doer is drawn (own colour or flash white); color: it is drawn in its own colour.
            shown = [synth.COLORS[doer.color]] + ([synth.FLASH_RGB] if qtype == "object" else [])
            witnesses = [
                t for t in range(scene.n_frames)
                if (active := synth.active_action(doer, t)) is not None and active[0] == action
                and any(_drawn_in(frames[t], rgb).any() for rgb in shown)
            ]
            assert witnesses, f"video {index}: no single frame answers {q.fields['question']!r}"
    assert "blink" not in asked and set(asked) == set(synth.SHAPE_SHOWN_ACTIONS)


def test_answers_are_balanced_per_template(tmp_path):
    synth.generate(tmp_path, 3000, 1, write_gifs=False)
    assert not (tmp_path / "gifs").exists()
    recs = {t: tgifqa.load(tmp_path, t, "train") + tgifqa.load(tmp_path, t, "test") for t in tgifqa.TASKS}

    def flat(counter: Counter, n_values: int) -> bool:
        expected = sum(counter.values()) / n_values
        return len(counter) == n_values and all(abs(c - expected) < 0.2 * expected for c in counter.values())

    assert flat(Counter(r.answer for r in recs["count"]), 6)
    for task in ("action", "transition"):
        assert flat(Counter(r.answer for r in recs[task]), 5)
        assert flat(Counter(r.candidates[r.answer] for r in recs[task]), 6)
    # Transition: the answer given the action named in the question is uniform over the other five.
    jump_after = Counter(r.candidates[r.answer] for r in recs["transition"] if r.question.endswith("after it jumps ?"))
    assert flat(jump_after, 5) and "jump" not in jump_after
    for qtype, n in (("object", 4), ("number", 3), ("color", 5), ("location", 4)):
        assert flat(Counter(r.answer for r in recs["frameqa"] if r.answer_type == qtype), n)


def test_cli_generates_and_rejects_bad_parameters(tmp_path, capsys):
    assert cli_main(["synth", "--out", str(tmp_path / "s"), "--videos", "3", "--seed", "1", "--size", "64",
                     "--max-frames", "48"]) == 0
    assert len(list((tmp_path / "s" / "gifs").glob("*.gif"))) == 3
    # what it generates is said before it starts (a large set takes minutes)
    assert capsys.readouterr().err.startswith(f"stqa synth: generating 3 videos (seed 1) in {tmp_path / 's'}, ")
    assert decode_video(next((tmp_path / "s" / "gifs").glob("*.gif"))).width == 64
    assert cli_main(["synth", "--out", str(tmp_path / "bad"), "--videos", "3", "--max-frames", "30"]) == 2
    assert "max_frames" in capsys.readouterr().err
    assert cli_main(["synth", "--out", str(tmp_path / "bad"), "--videos", "1"]) == 2
    assert "generating" not in capsys.readouterr().err  # refused before anything is announced
    # counts above TGIF-QA's range would make a set the loader refuses
    assert cli_main(["synth", "--out", str(tmp_path / "bad"), "--videos", "3", "--max-count", "11"]) == 2
    assert "max_count must be in 2..10" in capsys.readouterr().err
    assert cli_main(["synth", "--videos", "3"]) == 2
    with pytest.raises(ValueError, match="size"):
        synth.generate(tmp_path / "bad", 4, 0, size=200)
    # Re-running into the same directory is fine; mixing in GIFs of another run is refused.
    assert cli_main(["synth", "--out", str(tmp_path / "s"), "--videos", "3", "--seed", "1", "--size", "64"]) == 0
    assert cli_main(["synth", "--out", str(tmp_path / "s"), "--videos", "3", "--seed", "2"]) == 2
    assert "another run" in capsys.readouterr().err


def test_frame_labels_name_what_is_drawn_where():
    """The perception targets agree with the rendered pixels: the labelled cell holds the centre of a shape
    of that colour (white while it flashes), blinking shapes have no label, and nothing else is labelled."""
    cfg = synth.SynthConfig()
    seen = Counter()
    for index in range(3):
        scene, _ = synth.sample_video(SEED, index, cfg)
        for t in range(scene.n_frames):
            rgb = np.asarray(synth.render_frame(scene, t, cfg.size).convert("RGB"))
            labels = synth.frame_labels(scene, t, grid=7)
            assert labels["color"].shape == (7, 7) and labels["geometry"].shape == (7, 7, 3)
            expected_cells = 0
            for obj in scene.objects:
                x, y, scale, visible, flash = synth.object_state(obj, t)
                if not visible:
                    seen["blink"] += 1
                    continue
                expected_cells += 1
                gy, gx = int(y * 7), int(x * 7)
                colour = "white" if flash else obj.color
                assert synth.LABEL_COLORS[labels["color"][gy, gx]] == colour
                assert synth.LABEL_SHAPES[labels["shape"][gy, gx]] == obj.shape
                gxf, gyf, log_scale = labels["geometry"][gy, gx]
                assert abs((gx + gxf) / 7 - x) < 1e-6 and abs((gy + gyf) / 7 - y) < 1e-6
                assert abs(np.exp(log_scale) - scale) < 1e-6
                if obj.shape != "cross":  # a cross's centre is drawn; check the pixel there has the colour
                    px = rgb[int(y * cfg.size), int(x * cfg.size)]
                    want = synth.FLASH_RGB if flash else synth.COLORS[obj.color]
                    assert tuple(px) == tuple(want), (obj.name, t)
                seen["flash" if flash else "plain"] += 1
            assert int(labels["occupied"].sum()) == expected_cells
            assert (labels["shape"] > 0).sum() == expected_cells
    assert seen["blink"] and seen["flash"] and seen["plain"]
    with pytest.raises(ValueError, match="outside"):
        synth.render_frame(scene, scene.n_frames, cfg.size)


def test_gif_names_and_config_round_trip(synth_dir):
    meta = json.loads((synth_dir / "synth.json").read_text())
    assert synth.config_from_meta(meta) == synth.SynthConfig()
    assert synth.parse_gif_name(synth.gif_name_for(SEED, 42)) == (SEED, 42)
    with pytest.raises(ValueError, match="not a synthetic gif_name"):
        synth.parse_gif_name("tumblr_abc123")
    with pytest.raises(ValueError, match="generation parameter"):
        synth.config_from_meta({"size": 112})


def test_import_needs_neither_torch_nor_the_extension():
    """`import stqa.data.synth` (and so `stqa synth`'s own code) loads neither torch nor stqa._C: the
    generator runs where the extension is not built. In a fresh interpreter, so no other test's imports count."""
    code = ("import sys, stqa.data.synth, stqa.data.leakage; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'stqa._C'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]"
