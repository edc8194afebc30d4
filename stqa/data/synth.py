"""`stqa synth`: a synthetic spatio-temporal video QA benchmark in the TGIF-QA file format.

Each video is an animated GIF of 2-3 flat-coloured shapes (circle, square, triangle, cross) on a plain
background. Every shape sits in one of four zones (left, right, top, bottom) and performs a script of three
segments; a segment is one action (jump, blink, grow, shrink, shake, flash) repeated a few times.
Exactly one shape per video also glides to a free neighbouring zone between two of its segments. The
questions (count, action, transition, frameqa) are generated *answer first* so that, for every question
template, the answer is uniformly distributed given the question text and the MC answer index is uniform:
a model that does not look at the video stays at chance (checked by ``stqa synth --check``, see
docs/synthetic.md).

Frames are drawn in palette ("P") mode with a fixed palette, so GIF encoding is lossless. A 2-pixel progress
bar along the bottom edge grows every frame: Pillow's GIF writer merges identical consecutive frames (adding
their durations), which would silently shorten the video and break the frame timing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TASKS: tuple[str, ...] = ("count", "action", "transition", "frameqa")
SPLITS: tuple[str, ...] = ("Train", "Test")

# The exact TGIF-QA headers (tab-separated, CRLF line endings).
HEADERS: dict[str, tuple[str, ...]] = {
    "count": ("gif_name", "question", "answer", "vid_id", "key"),
    "action": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "transition": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id", "key", "description"),
}
VID_ID_PREFIX: dict[str, str] = {"count": "COUNT", "action": "ACTION", "transition": "TRANS", "frameqa": "FRAMEQA"}
FRAMEQA_TYPES: tuple[str, ...] = ("object", "number", "color", "location")  # type column 0..3

ACTIONS: tuple[str, ...] = ("jump", "blink", "grow", "shrink", "shake", "flash")
VERB_3S: dict[str, str] = {a: a + ("es" if a.endswith("sh") else "s") for a in ACTIONS}
VERB_ING: dict[str, str] = {a: (a[:-1] if a.endswith("e") else a) + "ing" for a in ACTIONS}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SHAPE_PLURAL: dict[str, str] = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}
# Object colours: far apart in RGB so a small CNN separates them easily; white is reserved for "flash".
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (165, 60, 210),
}
BACKGROUND_RGB = (28, 28, 28)
FLASH_RGB = (255, 255, 255)
BAR_RGB = (120, 120, 120)
# Zone centres as fractions of the frame size (x, y). Neighbouring zones are at least 0.37*size apart, so
# shapes never overlap, even while growing (radius 0.16*size) or jumping.
ZONES: dict[str, tuple[float, float]] = {
    "left": (0.22, 0.52),
    "top": (0.50, 0.28),
    "right": (0.78, 0.52),
    "bottom": (0.50, 0.76),
}
ZONE_NAMES: tuple[str, ...] = tuple(ZONES)  # cyclic order: a glide goes to a neighbour, never across the centre
NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three")

# Timing (frames). One repetition = ACTIVE frames of the action + REST frames at rest, so any sampling that
# keeps at least one of every two consecutive frames (num_frames > n_frames / 2) still sees every event and
# every pause between events.
ACTIVE_FRAMES = 2
REST_FRAMES = 2
REP_FRAMES = ACTIVE_FRAMES + REST_FRAMES
GLIDE_FRAMES = 6
LEAD_MAX = 2  # idle frames before a shape's first segment: 1..LEAD_MAX
GAP_MAX = 1  # extra idle frames between two segments: 0..GAP_MAX
TAIL_MIN = 2  # idle frames after the last event of the busiest shape
SEGMENTS_PER_OBJECT = 3
OTHER_REPS = (1, 2, 3, 4)  # repetition counts of the segments that are not the counted one
FRAME_DURATION_MS = 80
BASE_RADIUS = 0.10  # shape radius as a fraction of the frame size
FORMAT_VERSION = 2  # 2: FrameQA object/color questions answerable from one frame

# Per action, the per-active-frame change: (dx, dy) in fractions of the size, scale, visible, flash.
_ACTION_FRAMES: dict[str, tuple[tuple[float, float, float, bool, bool], ...]] = {
    "jump": ((0.0, -0.09, 1.0, True, False), (0.0, -0.15, 1.0, True, False)),
    "blink": ((0.0, 0.0, 1.0, False, False), (0.0, 0.0, 1.0, False, False)),
    "grow": ((0.0, 0.0, 1.35, True, False), (0.0, 0.0, 1.6, True, False)),
    "shrink": ((0.0, 0.0, 0.65, True, False), (0.0, 0.0, 0.4, True, False)),
    "shake": ((0.08, 0.0, 1.0, True, False), (-0.08, 0.0, 1.0, True, False)),
    "flash": ((0.0, 0.0, 1.0, True, True), (0.0, 0.0, 1.0, True, True)),
}
# TGIF-QA's FrameQA questions "can be answered from one of the frames" (Jang et al., CVPR 2017, Fig. 2). A shape
# is invisible while it blinks and white while it flashes, so "what shape is blinking ?" and "what color is
# the flashing shape ?" need two frames (the event, and the shape elsewhere in time); FrameQA asks only about
# actions during which one frame shows the asked attribute.
SHAPE_SHOWN_ACTIONS: tuple[str, ...] = tuple(a for a in ACTIONS if a != "blink")
COLOR_SHOWN_ACTIONS: tuple[str, ...] = tuple(a for a in ACTIONS if a not in ("blink", "flash"))

# Palette indices: 0 background, 1 bar, 2 flash white, then the object colours.
_PALETTE_RGB: list[tuple[int, int, int]] = [BACKGROUND_RGB, BAR_RGB, FLASH_RGB, *COLORS.values()]
_COLOR_INDEX: dict[str, int] = {name: 3 + i for i, name in enumerate(COLORS)}
_PALETTE_BYTES: list[int] = [c for rgb in _PALETTE_RGB for c in rgb] + [0] * (3 * (256 - len(_PALETTE_RGB)))


@dataclass(frozen=True)
class SynthConfig:
    """Generation parameters (everything that determines the output besides the seed)."""

    size: int = 112
    min_frames: int = 16
    max_frames: int = 48
    max_count: int = 6
    test_fraction: float = 0.2

    def validate(self) -> None:
        """Raise ValueError naming the first parameter that cannot produce a valid benchmark."""
        if not 64 <= self.size <= 112:
            raise ValueError(f"size must be in 64..112 pixels, got {self.size}")
        if self.min_frames < 1 or self.min_frames > self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.max_frames > self.size:
            raise ValueError(
                f"max_frames ({self.max_frames}) may not exceed size ({self.size}): the progress bar must grow "
                "by at least one pixel per frame so that no two frames are identical"
            )
        if self.max_count < 2:
            raise ValueError(f"max_count must be >= 2, got {self.max_count}")
        need = _min_rep_budget(self.max_count)
        if self.rep_budget < need:
            min_frames_needed = need * REP_FRAMES + LEAD_MAX + GAP_MAX * 2 + GLIDE_FRAMES + TAIL_MIN
            raise ValueError(
                f"max_frames={self.max_frames} is too short for max_count={self.max_count}: need "
                f"max_frames >= {min_frames_needed} (three segments, one glide, {REP_FRAMES} frames per event)"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    @property
    def rep_budget(self) -> int:
        """Most repetitions one shape can perform (all three segments) within ``max_frames``."""
        spare = self.max_frames - LEAD_MAX - GAP_MAX * (SEGMENTS_PER_OBJECT - 1) - GLIDE_FRAMES - TAIL_MIN
        return spare // REP_FRAMES


def _min_rep_budget(max_count: int) -> int:
    # The counted segment may need max_count reps, plus the two smallest other counts; a plain shape needs
    # three distinct counts from OTHER_REPS.
    worst = max(k + sum(sorted(r for r in OTHER_REPS if r != k)[:2]) for k in range(1, max_count + 1))
    return max(worst, sum(sorted(OTHER_REPS)[:3]))


@dataclass
class Segment:
    """One action repeated ``reps`` times from frame ``start``."""

    action: str
    reps: int
    start: int = 0

    @property
    def end(self) -> int:
        return self.start + self.reps * REP_FRAMES


@dataclass
class SceneObject:
    """A shape with its colour, zones and script."""

    color: str
    shape: str
    zone: str
    segments: list[Segment]
    end_zone: str | None = None  # set for the one shape that glides
    glide_after: int | None = None  # index of the segment after which it glides
    glide_start: int | None = None

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def final_zone(self) -> str:
        return self.end_zone or self.zone

    @property
    def end(self) -> int:
        return self.segments[-1].end


@dataclass
class Scene:
    """Everything drawn in one video."""

    n_frames: int
    objects: list[SceneObject]


@dataclass
class Question:
    """One annotation row (before ids are assigned); ``fields`` maps header names to values."""

    task: str
    fields: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- sampling


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _sample_scene(rng: np.random.Generator, cfg: SynthConfig) -> tuple[Scene, list[Question]]:
    """Sample one scene and its questions, answers first (see the module docstring)."""
    # Number question first: answer uniform in one..three, so the number of shapes depends on it.
    n_same = int(rng.integers(1, 4))
    n_obj = 3 if n_same == 3 else int(rng.integers(2, 4))
    asked_shape = _choice(rng, SHAPES)
    same_slots = set(rng.choice(n_obj, size=n_same, replace=False).tolist())
    others = [s for s in SHAPES if s != asked_shape]
    shapes = [asked_shape if i in same_slots else _choice(rng, others) for i in range(n_obj)]
    colors = [list(COLORS)[i] for i in rng.choice(len(COLORS), size=n_obj, replace=False)]
    zones = [ZONE_NAMES[i] for i in rng.choice(len(ZONE_NAMES), size=n_obj, replace=False)]

    # Actions: three distinct per shape; resample until some action that shows colour and shape is done by
    # exactly one shape (needed for "what color is the growing shape ?"). The condition is symmetric in the
    # shapes, colours and counts, so FrameQA answers stay uniform given the question text; its slight tilt of
    # the action mix is measured by `stqa synth --check` (docs/synthetic.md).
    while True:
        actions = [[ACTIONS[i] for i in rng.permutation(len(ACTIONS))[:SEGMENTS_PER_OBJECT]] for _ in range(n_obj)]
        doers = {a: [i for i in range(n_obj) if a in actions[i]] for a in ACTIONS}
        unique_actions = [a for a in ACTIONS if len(doers[a]) == 1]
        if any(a in COLOR_SHOWN_ACTIONS for a in unique_actions):
            break

    # Repetitions. One shape is the subject of the action questions; every other shape has one counted
    # segment whose count is drawn uniformly from 1..max_count first (one count question each). The other
    # segments fill the frame budget with counts distinct within a shape (so "what does X do 3 times ?" has
    # one answer).
    action_obj = int(rng.integers(n_obj))
    counted: dict[int, tuple[int, int]] = {}  # shape -> (segment slot, count)
    for i in range(n_obj):
        if i != action_obj:
            counted[i] = (int(rng.integers(SEGMENTS_PER_OBJECT)), int(rng.integers(1, cfg.max_count + 1)))
    reps: list[list[int]] = []
    for i in range(n_obj):
        if i in counted:
            slot, k = counted[i]
            pool = [r for r in OTHER_REPS if r != k]
            pairs = [(a, b) for a in pool for b in pool if a != b and k + a + b <= cfg.rep_budget]
            a, b = _choice(rng, pairs)
            row = [a, b]
            row.insert(slot, k)
        else:
            triples = [t for t in _ordered_triples(OTHER_REPS) if sum(t) <= cfg.rep_budget]
            row = list(_choice(rng, triples))
        reps.append(row)

    objects: list[SceneObject] = []
    for i in range(n_obj):
        segs = [Segment(actions[i][j], reps[i][j]) for j in range(SEGMENTS_PER_OBJECT)]
        objects.append(SceneObject(colors[i], shapes[i], zones[i], segs))

    # One shape glides to a free neighbouring zone (never across the centre, so paths never cross shapes).
    occupied = set(zones)
    moves = []
    for i, z in enumerate(zones):
        zi = ZONE_NAMES.index(z)
        for nb in (ZONE_NAMES[(zi - 1) % 4], ZONE_NAMES[(zi + 1) % 4]):
            if nb not in occupied:
                moves.append((i, nb))
    mover, target_zone = _choice(rng, moves)
    objects[mover].end_zone = target_zone
    objects[mover].glide_after = int(rng.integers(SEGMENTS_PER_OBJECT - 1))

    # Timeline per shape.
    for obj in objects:
        t = int(rng.integers(1, LEAD_MAX + 1))
        for j, seg in enumerate(obj.segments):
            if j > 0:
                t += int(rng.integers(0, GAP_MAX + 1))
            seg.start = t
            t = seg.end
            if obj.glide_after == j:
                obj.glide_start = t
                t += GLIDE_FRAMES
    busiest = max(_object_end(o) for o in objects)
    if busiest + TAIL_MIN > cfg.max_frames:  # guaranteed by SynthConfig.validate; keep the invariant explicit
        raise AssertionError(f"scene needs {busiest + TAIL_MIN} frames > max_frames {cfg.max_frames}")
    n_frames = int(rng.integers(busiest + TAIL_MIN, cfg.max_frames + 1))
    n_frames = max(n_frames, cfg.min_frames)
    scene = Scene(n_frames, objects)

    questions: list[Question] = []
    # Count: one question per counted shape.
    for i, (slot, k) in counted.items():
        cobj, cseg = objects[i], objects[i].segments[slot]
        questions.append(
            Question("count", {"question": f"How many times does the {cobj.name} {cseg.action} ?", "answer": str(k)})
        )
    # Action: two of the action shape's three segments. These questions name no action, and no count question
    # is about this shape, so no sibling question rules a candidate out.
    aobj = objects[action_obj]
    # 6 actions, 5 candidates: leave out an action nobody performs when there is one, so the distractors are
    # things that happen in the video (the choice is symmetric in the action labels: no text leak).
    unseen = [a for a in ACTIONS if not doers[a]]
    for j in sorted(rng.choice(SEGMENTS_PER_OBJECT, size=2, replace=False).tolist()):
        aseg = aobj.segments[j]
        times = "once" if aseg.reps == 1 else f"{aseg.reps} times"
        dropped = _choice(rng, unseen or [a for a in ACTIONS if a != aseg.action])
        questions.append(
            _mc_question(
                rng, "action", f"What does the {aobj.name} do {times} ?", aseg.action, [a for a in ACTIONS if a != dropped]
            )
        )
    # Transition: two questions about two different shapes. The candidates are the five actions other than
    # the one named in the question, so the answer is uniform over them.
    for ti in rng.choice(n_obj, size=2, replace=False).tolist():
        tobj = objects[ti]
        b = int(rng.integers(SEGMENTS_PER_OBJECT - 1))
        before, after = tobj.segments[b].action, tobj.segments[b + 1].action
        if rng.integers(2) == 0:
            text, answer, named = f"What does the {tobj.name} do after it {VERB_3S[before]} ?", after, before
        else:
            text, answer, named = f"What does the {tobj.name} do before it {VERB_3S[after]} ?", before, after
        questions.append(_mc_question(rng, "transition", text, answer, [a for a in ACTIONS if a != named]))
    # FrameQA: one question of each type.
    z = _choice(rng, [a for a in unique_actions if a in SHAPE_SHOWN_ACTIONS])
    zobj = objects[doers[z][0]]
    questions.append(_frameqa("object", f"what shape is {VERB_ING[z]} ?", zobj.shape, f"the {VERB_ING[z]} shape is a {zobj.shape} ."))
    word = NUMBER_WORDS[n_same - 1]
    noun = asked_shape if n_same == 1 else SHAPE_PLURAL[asked_shape]
    verb = "is" if n_same == 1 else "are"
    questions.append(
        _frameqa("number", f"how many {SHAPE_PLURAL[asked_shape]} are there ?", word, f"there {verb} {word} {noun} .")
    )
    colorable = [a for a in unique_actions if a in COLOR_SHOWN_ACTIONS]
    w = _choice(rng, [a for a in colorable if a != z] or colorable)
    wobj = objects[doers[w][0]]
    questions.append(
        _frameqa("color", f"what color is the {VERB_ING[w]} shape ?", wobj.color, f"the {VERB_ING[w]} shape is {wobj.color} .")
    )
    if rng.integers(2) == 0:
        lobj = objects[mover]
    else:
        lobj = objects[_choice(rng, [i for i in range(n_obj) if i != mover])]
    when = "start" if rng.integers(2) == 0 else "end"
    where = lobj.zone if when == "start" else lobj.final_zone
    questions.append(
        _frameqa(
            "location",
            f"where is the {lobj.name} at the {when} ?",
            where,
            f"the {lobj.name} is at the {where} at the {when} .",
        )
    )
    return scene, questions


def _ordered_triples(values: Sequence[int]) -> list[tuple[int, int, int]]:
    return [(a, b, c) for a in values for b in values for c in values if len({a, b, c}) == 3]


def _object_end(obj: SceneObject) -> int:
    return obj.end


def _mc_question(rng: np.random.Generator, task: str, text: str, answer: str, candidates: list[str]) -> Question:
    if answer not in candidates or len(candidates) != 5:
        raise AssertionError(f"bad candidate set {candidates} for answer {answer}")
    order = [candidates[i] for i in rng.permutation(5)]
    fields = {"question": text, **{f"a{i + 1}": c for i, c in enumerate(order)}, "answer": str(order.index(answer))}
    return Question(task, fields)


def _frameqa(qtype: str, text: str, answer: str, description: str) -> Question:
    return Question(
        "frameqa",
        {"question": text, "answer": answer, "type": str(FRAMEQA_TYPES.index(qtype)), "description": description},
    )


# -------------------------------------------------------------------------------------------- rendering


def active_action(obj: SceneObject, t: int) -> tuple[str, int] | None:
    """(action, active frame 0..ACTIVE_FRAMES-1) when frame ``t`` is mid-repetition for ``obj``, else None."""
    for seg in obj.segments:
        if seg.start <= t < seg.end:
            phase = (t - seg.start) % REP_FRAMES
            return (seg.action, phase) if phase < ACTIVE_FRAMES else None
    return None


def object_state(obj: SceneObject, t: int) -> tuple[float, float, float, bool, bool]:
    """(x, y, scale, visible, flash) of ``obj`` at frame ``t``; x, y in fractions of the size."""
    x, y = ZONES[obj.zone]
    if obj.end_zone is not None and obj.glide_start is not None and t >= obj.glide_start:
        ex, ey = ZONES[obj.end_zone]
        frac = min(1.0, (t - obj.glide_start + 1) / (GLIDE_FRAMES + 1))
        x, y = x + (ex - x) * frac, y + (ey - y) * frac
    active = active_action(obj, t)
    if active is None:
        return x, y, 1.0, True, False
    action, phase = active
    dx, dy, scale, visible, flash = _ACTION_FRAMES[action][phase]
    return x + dx, y + dy, scale, visible, flash


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: int) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = r * 0.88  # same area as the circle
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - 1.15 * r), (cx - 1.15 * r, cy + 0.85 * r), (cx + 1.15 * r, cy + 0.85 * r)], fill=fill)
    elif shape == "cross":
        w = r * 0.38
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_frame(scene: Scene, t: int, size: int) -> Image.Image:
    """Draw frame ``t`` of ``scene`` as a palette image of ``size`` x ``size`` pixels."""
    if not 0 <= t < scene.n_frames:
        raise ValueError(f"frame {t} is outside the scene's {scene.n_frames} frames")
    im = Image.new("P", (size, size), 0)
    im.putpalette(_PALETTE_BYTES)
    draw = ImageDraw.Draw(im)
    for obj in scene.objects:
        x, y, scale, visible, flash = object_state(obj, t)
        if visible:
            fill = 2 if flash else _COLOR_INDEX[obj.color]
            _draw_shape(draw, obj.shape, x * size, y * size, BASE_RADIUS * size * scale, fill)
    bar = round((t + 1) * size / scene.n_frames)
    draw.rectangle((0, size - 2, bar - 1, size - 1), fill=1)
    return im


def render_frames(scene: Scene, size: int) -> list[Image.Image]:
    """Draw every frame of ``scene`` as a palette image of ``size`` x ``size`` pixels."""
    return [render_frame(scene, t, size) for t in range(scene.n_frames)]


#: Classes of :func:`frame_labels`: index 0 is an empty cell; "white" is a flashing shape.
LABEL_COLORS: tuple[str, ...] = ("none", *COLORS, "white")
LABEL_SHAPES: tuple[str, ...] = ("none", *SHAPES)


def frame_labels(scene: Scene, t: int, grid: int = 7) -> dict[str, np.ndarray]:
    """What is where in frame ``t``, per cell of a ``grid`` x ``grid`` partition of the frame.

    A visible shape labels the cell holding its centre: ``color`` (index into :data:`LABEL_COLORS`),
    ``shape`` (:data:`LABEL_SHAPES`), and ``geometry`` = (x, y of the centre within the cell in [0, 1),
    log of the size factor); every other cell is ``none`` with zero geometry. ``occupied`` marks the
    labelled cells. These are the perception targets of :mod:`stqa.pretrain`.
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    color = np.zeros((grid, grid), dtype=np.int64)
    shape = np.zeros((grid, grid), dtype=np.int64)
    geometry = np.zeros((grid, grid, 3), dtype=np.float32)
    for obj in scene.objects:
        x, y, scale, visible, flash = object_state(obj, t)
        if not visible:
            continue
        gx, gy = min(grid - 1, max(0, int(x * grid))), min(grid - 1, max(0, int(y * grid)))
        color[gy, gx] = LABEL_COLORS.index("white" if flash else obj.color)
        shape[gy, gx] = LABEL_SHAPES.index(obj.shape)
        geometry[gy, gx] = (x * grid - gx, y * grid - gy, np.log(scale))
    return {"color": color, "shape": shape, "geometry": geometry, "occupied": color > 0}


def parse_gif_name(name: str) -> tuple[int, int]:
    """(seed, index) of a synthetic ``gif_name`` (``synth<seed>_<index:06d>``, see :func:`gif_name_for`)."""
    m = re.fullmatch(r"synth(\d+)_(\d+)", name)
    if m is None:
        raise ValueError(f"{name!r} is not a synthetic gif_name (expected synth<seed>_<index>)")
    return int(m.group(1)), int(m.group(2))


def read_meta(root: str | Path) -> dict:
    """The ``synth.json`` of a generated set, checked to come from this generator's format.

    A set from another format has other scenes and questions, so nothing may be rendered or trained from it.
    """
    path = Path(root) / "synth.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root} has no synth.json, so it is not a `stqa synth` set")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    found = meta.get("format_version") if isinstance(meta, dict) else None
    if found != FORMAT_VERSION:
        raise ValueError(f"{root} holds synthetic format {found} but this stqa generates format {FORMAT_VERSION}")
    return meta


def config_from_meta(meta: dict) -> SynthConfig:
    """The :class:`SynthConfig` a ``synth.json`` was generated with."""
    try:
        return SynthConfig(size=int(meta["size"]), min_frames=int(meta["min_frames"]),
                           max_frames=int(meta["max_frames"]), max_count=int(meta["max_count"]),
                           test_fraction=float(meta["test_fraction"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"synth.json lacks a generation parameter: {err}") from err


def write_gif(frames: list[Image.Image], path: Path) -> None:
    """Save palette frames as a looping GIF (lossless: the palette holds every colour used).

    ``optimize=True`` shrinks the palette to the colours present and writes unchanged pixels as transparent:
    3-4x smaller files, still decoded to exactly the drawn frames (tested)."""
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=FRAME_DURATION_MS, loop=0, optimize=True
    )


# ---------------------------------------------------------------------------------------------- writing


def sample_video(seed: int, index: int, config: SynthConfig | None = None) -> tuple[Scene, list[Question]]:
    """The scene and questions of video ``index`` of the set generated with ``seed`` (no rendering)."""
    cfg = config or SynthConfig()
    cfg.validate()
    return _sample_scene(np.random.default_rng(np.random.SeedSequence([seed, index])), cfg)


def test_indices(seed: int, n_videos: int, test_fraction: float) -> set[int]:
    """The video indices a ``generate(seed, n_videos, test_fraction)`` set puts in its test split (the rest
    are train, which training splits again into train and validation)."""
    n_test = min(n_videos - 1, max(1, round(n_videos * test_fraction)))
    perm = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1])).permutation(n_videos)
    return set(perm[:n_test].tolist())


def gif_name_for(seed: int, index: int) -> str:
    """File stem of video ``index`` (0-based) of the set generated with ``seed``."""
    return f"synth{seed}_{index:06d}"


def _write_tsv(path: Path, header: Sequence[str], rows: list[list[str]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    for line in lines:
        if "\r" in line or "\n" in line or line.count("\t") != len(header) - 1:
            raise AssertionError(f"field with a tab or newline in {path.name}: {line!r}")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))


def generate(
    out_dir: str | Path,
    n_videos: int,
    seed: int,
    *,
    size: int = 112,
    min_frames: int = 16,
    max_frames: int = 48,
    max_count: int = 6,
    test_fraction: float = 0.2,
    write_gifs: bool = True,
    progress: bool = False,
) -> dict:
    """Render ``n_videos`` GIFs and write the TGIF-QA annotation files into ``out_dir``.

    Deterministic: the same arguments give byte-identical files. ``write_gifs=False`` writes only the
    annotations (same questions and answers; useful for leakage checks on many videos). Returns the
    contents of ``synth.json``.
    """
    cfg = SynthConfig(size, min_frames, max_frames, max_count, test_fraction)
    cfg.validate()
    if n_videos < 2:
        raise ValueError(f"n_videos must be >= 2 (a Train and a Test video), got {n_videos}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gif_dir = out / "gifs"
    if gif_dir.is_dir():
        # GIFs of an earlier, different run would sit next to the new annotations unnoticed.
        planned = {f"{gif_name_for(seed, i)}.gif" for i in range(n_videos)}
        stale = sorted(p.name for p in gif_dir.glob("*.gif") if p.name not in planned)
        if stale:
            raise ValueError(
                f"{gif_dir} holds {len(stale)} GIF(s) of another run (e.g. {stale[0]}); use an empty or new --out"
            )
    if write_gifs:
        gif_dir.mkdir(exist_ok=True)

    test_ids = test_indices(seed, n_videos, test_fraction)

    rows: dict[str, dict[str, list[list[str]]]] = {s: {t: [] for t in TASKS} for s in SPLITS}
    counters = dict.fromkeys(TASKS, 0)
    frame_counts: list[int] = []
    iterator = range(n_videos)
    if progress:
        from stqa.progress import progress as progress_bar

        iterator = progress_bar(iterator, desc="synth", unit="video")
    for index in iterator:
        scene, questions = sample_video(seed, index, cfg)
        gif_name = gif_name_for(seed, index)
        key = str(index + 1)
        split = "Test" if index in test_ids else "Train"
        frame_counts.append(scene.n_frames)
        if write_gifs:
            write_gif(render_frames(scene, size), gif_dir / f"{gif_name}.gif")
        for q in questions:
            counters[q.task] += 1
            values = {**q.fields, "gif_name": gif_name, "key": key, "vid_id": f"{VID_ID_PREFIX[q.task]}{counters[q.task]}"}
            rows[split][q.task].append([values[h] for h in HEADERS[q.task]])

    for split in SPLITS:
        for task in TASKS:
            _write_tsv(out / f"{split}_{task}_question.csv", HEADERS[task], rows[split][task])

    meta = {
        "generator": "stqa synth",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n_videos": n_videos,
        "size": size,
        "min_frames": min_frames,
        "max_frames": max_frames,
        "max_count": max_count,
        "test_fraction": test_fraction,
        "gifs_written": write_gifs,
        "frame_duration_ms": FRAME_DURATION_MS,
        "frames_per_event": {"active": ACTIVE_FRAMES, "rest": REST_FRAMES},
        "min_num_frames_for_sampling": max_frames // 2 + 1,
        "frame_count_range": [min(frame_counts), max(frame_counts)],
        "videos": {s: (len(test_ids) if s == "Test" else n_videos - len(test_ids)) for s in SPLITS},
        "questions": {s: {t: len(rows[s][t]) for t in TASKS} for s in SPLITS},
        "vocabulary": {
            "shapes": list(SHAPES),
            "colors": {k: list(v) for k, v in COLORS.items()},
            "actions": list(ACTIONS),
            "locations": list(ZONE_NAMES),
            "numbers": list(NUMBER_WORDS),
            "frameqa_types": list(FRAMEQA_TYPES),
        },
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``stqa synth``."""
    parser.add_argument("--out", type=Path, help="output directory (GIFs under OUT/gifs, CSVs, synth.json)")
    parser.add_argument("--videos", type=int, default=2000, help="number of videos to render (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed = byte-identical output")
    parser.add_argument("--size", type=int, default=112, help="frame width = height in pixels, 64..112")
    parser.add_argument("--min-frames", type=int, default=16)
    parser.add_argument("--max-frames", type=int, default=48)
    parser.add_argument("--max-count", type=int, default=6, help="largest repetition count asked about")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of videos in Test")
    parser.add_argument(
        "--no-gifs", action="store_true", help="write the annotations only (for leakage studies on many videos)"
    )
    parser.add_argument(
        "--check",
        type=Path,
        metavar="DIR",
        help="instead of generating: report answer distributions and blind baselines for the TGIF-QA files in "
        "DIR (synthetic or real); exit 1 if a text-only model is far above chance",
    )
    parser.add_argument("--json", type=Path, help="with --check: also write the report as JSON to this path")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stqa synth``."""
    if args.check is not None:
        return run_check(args.check, seed=args.seed, json_path=args.json)
    if args.out is None:
        print("stqa synth: --out DIR is required (or --check DIR)", file=sys.stderr)
        return 2
    try:
        meta = generate(
            args.out,
            args.videos,
            args.seed,
            size=args.size,
            min_frames=args.min_frames,
            max_frames=args.max_frames,
            max_count=args.max_count,
            test_fraction=args.test_fraction,
            write_gifs=not args.no_gifs,
            progress=sys.stderr.isatty(),
        )
    except ValueError as e:
        print(f"stqa synth: {e}", file=sys.stderr)
        return 2
    q = meta["questions"]
    print(
        f"wrote {meta['n_videos']} videos ({meta['videos']['Train']} train / {meta['videos']['Test']} test) to "
        f"{args.out}; questions train {q['Train']}, test {q['Test']}; frames {meta['frame_count_range']}"
    )
    return 0


# ----------------------------------------------------------------------------------------- leakage check

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
    from stqa.data.tgifqa import tokenize

    by_key: dict[int, list] = {}
    for recs in records_by_task.values():
        for r in recs:
            by_key.setdefault(r.key, []).append(r)
    out: dict[str, dict[str, float]] = {}
    for task in ("action", "transition"):
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
    from collections import Counter

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
    from collections import Counter

    from stqa.data import tgifqa
    from stqa.data.baselines import BASELINES, fit_baseline
    from stqa.metrics import count_target, headline, score_task

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--check: {root} is not a directory")
    report: dict = {"root": str(root), "tasks": {}, "checked": [], "passed": True}
    loaded: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    for task in TASKS:
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
            if task == "count":
                dist = Counter(count_target(int(r.answer)) for r in recs)
                entry[f"{split}_answers"] = {str(k): dist[k] for k in sorted(dist)}
            elif task == "frameqa":
                entry[f"{split}_types"] = dict(sorted(Counter(r.answer_type for r in recs).items()))
                by_type: dict[str, dict[str, int]] = {}
                for qtype in tgifqa.FRAMEQA_TYPES:
                    dist = Counter(str(r.answer) for r in recs if r.answer_type == qtype)
                    by_type[qtype] = dict(dist.most_common(8))
                    by_type[qtype]["(distinct)"] = len(dist)
                entry[f"{split}_answers"] = by_type
            else:
                dist = Counter(int(r.answer) for r in recs)
                entry[f"{split}_answer_index"] = {str(i): dist[i] for i in range(5)}
                cdist = Counter(r.candidates[r.answer] for r in recs)
                entry[f"{split}_answers"] = dict(cdist.most_common(8))
        if "train" in splits and "test" in splits and splits["train"] and splits["test"]:
            scores = {}
            for name in BASELINES:
                model = fit_baseline(name, splits["train"], seed=seed)
                scores[name] = score_task(task, splits["test"], model.predict(splits["test"]))
            entry["baselines"] = scores
            text = headline(task, scores["text-only"])
            if task == "count":
                reference = headline(task, scores["majority"])
                limit = COUNT_MSE_RATIO * reference
                entry["rule"] = f"text-only MSE {text:.3f} must be >= {COUNT_MSE_RATIO} x majority MSE = {limit:.3f}"
                ok = text >= limit
            elif task == "frameqa":
                reference = _type_prior_accuracy(splits["train"], splits["test"])
                entry["type_prior_accuracy"] = reference
                limit = reference + FRAMEQA_MARGIN
                entry["rule"] = (
                    f"text-only accuracy {text:.3f} must be <= per-type majority {reference:.3f} + "
                    f"{FRAMEQA_MARGIN} = {limit:.3f}"
                )
                ok = text <= limit
            else:
                limit = 1.0 / 5 + MC_MARGIN
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
        lines.append(f"\n[{task}] sizes {e['sizes']}" + (f"  missing: {', '.join(e['missing'])}" if e["missing"] else ""))
        for split in ("train", "test"):
            if f"{split}_answer_index" in e:
                lines.append(f"  {split} answer index: {e[f'{split}_answer_index']}")
            if f"{split}_types" in e:
                lines.append(f"  {split} question types: {e[f'{split}_types']}")
            if f"{split}_answers" in e:
                ans = e[f"{split}_answers"]
                if task == "frameqa":
                    for qtype, dist in ans.items():
                        lines.append(f"  {split} {qtype} answers: {dist}")
                else:
                    lines.append(f"  {split} answers: {ans}")
        for name, s in e.get("baselines", {}).items():
            if task == "count":
                lines.append(f"  {name:>9}: mse {s['mse']:.3f}  mse_raw {s['mse_raw']:.3f}  (n={s['n']})")
            elif task == "frameqa":
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
