"""What a synthetic video shows and what is asked about it: the vocabulary, the timing, the scene
sampler and its questions, generated answer first (see :mod:`stqa.data.synth`). No drawing here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stqa.data.tgifqa import FRAMEQA_TYPES
from stqa.tasks import COUNT_MAX, NUM_CANDIDATES

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
FORMAT_VERSION = 2  # 2: FrameQA object/color questions answerable from one frame

# TGIF-QA's FrameQA questions "can be answered from one of the frames" (Jang et al., CVPR 2017, Fig. 2). A shape
# is invisible while it blinks and white while it flashes, so "what shape is blinking ?" and "what color is
# the flashing shape ?" need two frames (the event, and the shape elsewhere in time); FrameQA asks only about
# actions during which one frame shows the asked attribute.
SHAPE_SHOWN_ACTIONS: tuple[str, ...] = tuple(a for a in ACTIONS if a != "blink")
COLOR_SHOWN_ACTIONS: tuple[str, ...] = tuple(a for a in ACTIONS if a not in ("blink", "flash"))


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
        if not 2 <= self.max_count <= COUNT_MAX:
            # Above COUNT_MAX a count answer is outside the TGIF-QA format: the loader would refuse the set.
            raise ValueError(f"max_count must be in 2..{COUNT_MAX} (TGIF-QA's count range), got {self.max_count}")
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
    if answer not in candidates or len(candidates) != NUM_CANDIDATES:
        raise AssertionError(f"bad candidate set {candidates} for answer {answer}")
    order = [candidates[i] for i in rng.permutation(NUM_CANDIDATES)]
    fields = {"question": text, **{f"a{i + 1}": c for i, c in enumerate(order)}, "answer": str(order.index(answer))}
    return Question(task, fields)


def _frameqa(qtype: str, text: str, answer: str, description: str) -> Question:
    return Question(
        "frameqa",
        {"question": text, "answer": answer, "type": str(FRAMEQA_TYPES.index(qtype)), "description": description},
    )


# ------------------------------------------------------------------------------------------ one video


def sample_video(seed: int, index: int, config: SynthConfig | None = None) -> tuple[Scene, list[Question]]:
    """The scene and questions of video ``index`` of the set generated with ``seed`` (no rendering)."""
    cfg = config or SynthConfig()
    cfg.validate()
    return _sample_scene(np.random.default_rng(np.random.SeedSequence([seed, index])), cfg)


def gif_name_for(seed: int, index: int) -> str:
    """File stem of video ``index`` (0-based) of the set generated with ``seed``."""
    return f"synth{seed}_{index:06d}"


def parse_gif_name(name: str) -> tuple[int, int]:
    """(seed, index) of a synthetic ``gif_name`` (``synth<seed>_<index:06d>``, see :func:`gif_name_for`)."""
    m = re.fullmatch(r"synth(\d+)_(\d+)", name)
    if m is None:
        raise ValueError(f"{name!r} is not a synthetic gif_name (expected synth<seed>_<index>)")
    return int(m.group(1)), int(m.group(2))
