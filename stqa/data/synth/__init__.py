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

The modules: :mod:`~stqa.data.synth.scenes` (vocabulary, timing, the scene sampler and its questions),
:mod:`~stqa.data.synth.render` (frames, GIFs, per-cell labels), :mod:`~stqa.data.synth.generate` (a whole
set on disk and its ``synth.json``) and :mod:`~stqa.data.synth.cli` (``stqa synth``); the leakage audit
behind ``--check`` is :mod:`stqa.data.leakage`. Everything public is re-exported here. None of it needs
torch or the compiled extension (tests/test_synth.py checks the imports).
"""

from __future__ import annotations

from stqa.data.synth.cli import add_arguments, run
from stqa.data.synth.generate import (
    SPLITS,
    config_from_meta,
    generate,
    plan,
    read_meta,
    synth_command,
    test_indices,
)
from stqa.data.synth.render import (
    BACKGROUND_RGB,
    BAR_RGB,
    BASE_RADIUS,
    FLASH_RGB,
    FRAME_DURATION_MS,
    LABEL_COLORS,
    LABEL_SHAPES,
    active_action,
    frame_labels,
    object_state,
    render_frame,
    render_frames,
    write_gif,
)
from stqa.data.synth.scenes import (
    ACTIONS,
    ACTIVE_FRAMES,
    COLOR_SHOWN_ACTIONS,
    COLORS,
    FORMAT_VERSION,
    FRAMEQA_TYPES,
    GAP_MAX,
    GLIDE_FRAMES,
    LEAD_MAX,
    NUMBER_WORDS,
    OTHER_REPS,
    REP_FRAMES,
    REST_FRAMES,
    SEGMENTS_PER_OBJECT,
    SHAPE_PLURAL,
    SHAPE_SHOWN_ACTIONS,
    SHAPES,
    TAIL_MIN,
    VERB_3S,
    VERB_ING,
    ZONE_NAMES,
    ZONES,
    Question,
    Scene,
    SceneObject,
    Segment,
    SynthConfig,
    gif_name_for,
    parse_gif_name,
    sample_video,
)

__all__ = [
    "ACTIONS", "ACTIVE_FRAMES", "BACKGROUND_RGB", "BAR_RGB", "BASE_RADIUS", "COLORS", "COLOR_SHOWN_ACTIONS",
    "FLASH_RGB", "FORMAT_VERSION", "FRAMEQA_TYPES", "FRAME_DURATION_MS", "GAP_MAX", "GLIDE_FRAMES",
    "LABEL_COLORS", "LABEL_SHAPES", "LEAD_MAX", "NUMBER_WORDS", "OTHER_REPS", "REP_FRAMES", "REST_FRAMES",
    "SEGMENTS_PER_OBJECT", "SHAPES", "SHAPE_PLURAL", "SHAPE_SHOWN_ACTIONS", "SPLITS", "TAIL_MIN", "VERB_3S",
    "VERB_ING", "ZONES", "ZONE_NAMES", "Question", "Scene", "SceneObject", "Segment", "SynthConfig",
    "active_action", "add_arguments", "config_from_meta", "frame_labels", "generate", "gif_name_for", "test_indices",
    "object_state", "parse_gif_name", "plan", "read_meta", "render_frame", "render_frames", "run", "sample_video",
    "synth_command", "write_gif",
]
