"""The Gradio page of ``stqa web``: inputs on the left, the answer and what the model looked at on the right.

Imported only when the page is built (``stqa web``), so ``stqa --help`` never pays for Gradio. Every
function the page calls is in :mod:`stqa.web.backend`; this module only lays out components and wires
events. Offline by construction: no share link, no analytics (set before Gradio is imported, by
:func:`stqa.web.run`), and the theme's fonts are the system's, so the page asks nothing of any host but
the one serving it.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import gradio as gr
from PIL import Image

from .backend import AUTO, TASK_CHOICES, VIDEO_SUFFIXES, Asker, Example, PageError, temporal_figure

log = logging.getLogger("stqa.web")

TITLE = "stqa — ask a question about a video"
TASK_LABELS = {AUTO: "auto (inferred from the question)"}  # a task's own name labels it
# System fonts only: a font Gradio has to fetch is a request to somewhere, and the page must work offline.
FONTS = ("ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif")
MONO_FONTS = ("ui-monospace", "DejaVu Sans Mono", "monospace")
CSS = """
#stqa-answer h2 { margin: 0 0 .25rem 0; font-size: 2rem; }
"""


def theme() -> gr.themes.Base:
    """Gradio's default look with system fonts."""
    return gr.themes.Default(font=FONTS, font_mono=MONO_FONTS)


def build(asker: Asker, examples: list[Example]) -> gr.Blocks:
    """The page: upload or pick a video, ask, and see the answer, top-k, attention strip and timings."""
    # delete_cache: uploads and drawn pictures are copied into Gradio's cache; drop them after an hour.
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"# {TITLE}\n{asker.describe_server()}")
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.File(label="Video (GIF, MP4, WebM, MOV): drop it here or click to upload",
                                file_types=list(VIDEO_SUFFIXES), type="filepath", elem_id="stqa-video")
                preview = gr.Image(label="Preview", interactive=False, visible=False, height=224,
                                   elem_id="stqa-preview")
                question = gr.Textbox(label="Question", placeholder="how many times does the red circle jump ?",
                                      lines=1, max_lines=3, elem_id="stqa-question")
                with gr.Row():
                    task = gr.Dropdown(label="Task", choices=[(TASK_LABELS.get(t, t), t) for t in TASK_CHOICES],
                                       value=AUTO, elem_id="stqa-task")
                    candidates = gr.Textbox(label="Candidates (optional: 5 answers, comma-separated, "
                                                  "for action and transition questions)",
                                            placeholder="jump, shake, blink, flash, grow", elem_id="stqa-candidates")
                submit = gr.Button("Ask", variant="primary", elem_id="stqa-ask")
                gr.Examples(examples=[e.row() for e in examples], inputs=[video, question, task, candidates],
                            label="Examples: synthetic videos the model never saw",
                            example_labels=[f"{e.question}  (truth: {e.truth})" for e in examples])
            with gr.Column(scale=3):
                answer = gr.Markdown("Ask a question to see the answer here.", elem_id="stqa-answer")
                top_k = gr.Label(label="Top answers", num_top_classes=5, elem_id="stqa-topk")
                timings = gr.Markdown("", elem_id="stqa-timings")
        gr.Markdown("### Where and when the model looked\nThe attention strip of `stqa ask --attention-out`: "
                    "heat is spatial attention within each sampled frame, bars the temporal attention.")
        # No label: it would cover the strip's own title (the question and the answer).
        picture = gr.Image(show_label=False, type="pil", format="png", interactive=False, elem_id="stqa-picture")
        plot = gr.Plot(label="Temporal attention over the sampled frames", format="png", elem_id="stqa-plot")

        def show_preview(path: str | None) -> dict[str, Any]:
            # A GIF shows as an image; other containers have no preview here (that would need ffmpeg to
            # make them playable in every browser): the attention strip shows their frames after asking.
            gif = bool(path) and str(path).lower().endswith(".gif")
            return gr.update(value=path if gif else None, visible=gif)

        def ask(path: str | None, text: str, task_name: str, candidates_text: str) -> tuple[Any, ...]:
            try:
                result = asker.ask(path, text, task_name, candidates_text)
            except PageError as err:
                raise gr.Error(str(err), print_exception=False) from None
            except Exception as err:  # a bug: the page says so in a sentence, the log has the traceback
                log.exception("asking failed")
                raise gr.Error(f"Something went wrong in stqa web ({type(err).__name__}); the traceback is "
                               f"in its log.", print_exception=False) from None
            return (result.summary, result.top_k, result.timings, Image.open(io.BytesIO(result.picture)),
                    temporal_figure(result.frame_indices, result.temporal))

        video.change(show_preview, inputs=video, outputs=preview, api_name=False)
        outputs = [answer, top_k, timings, picture, plot]
        submit.click(ask, inputs=[video, question, task, candidates], outputs=outputs, api_name="ask")
        question.submit(ask, inputs=[video, question, task, candidates], outputs=outputs, api_name=False)
    return page
