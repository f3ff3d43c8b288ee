"""A classify-only Gradio app for the exported model (a Hugging Face Space, or ``python app.py``).

Needs gradio, onnxruntime, Pillow and numpy; no torch. Pictures go through ``predict.py``,
the app's own preprocessing, so the answers are the ones the app gave when it exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from predict import load

HERE = Path(__file__).resolve().parent
MODEL = load(HERE)
INFO = json.loads((HERE / "space.json").read_text(encoding="utf-8")) if (HERE / "space.json").is_file() else {}


def classify(picture: str | None):
    """All classes with their probabilities for one picture (the original file, as uploaded)."""
    if not picture:
        return None
    row = MODEL.predict([picture])[0]
    if "error" in row:
        raise gr.Error(f"This picture was not classified: {row['error']}.", print_exception=False)
    return row["probs"]


def build() -> gr.Blocks:
    examples = sorted(str(p) for p in (HERE / "examples").glob("*") if p.is_file())
    with gr.Blocks(title=INFO.get("title", "Image classifier")) as demo:
        gr.Markdown(f"# {INFO.get('title', 'Image classifier')}\n{INFO.get('summary', '')}")
        with gr.Row():
            # type="filepath" with image_mode=None: the file as uploaded (Gradio's default "RGB" would drop
            # transparency and re-save it), so the preprocessing is predict.py's alone.
            picture = gr.Image(type="filepath", image_mode=None, label="Picture",
                               sources=["upload", "clipboard", "webcam"])
            label = gr.Label(num_top_classes=len(MODEL.classes), label="Prediction")
        button = gr.Button("Classify", variant="primary")
        button.click(classify, picture, label, api_name="classify")
        picture.upload(classify, picture, label, api_visibility="private")
        if examples:
            gr.Examples(examples, picture, label="Pictures the model never learned from")
        with gr.Accordion("About this model", open=False):
            card = HERE / "README.md"
            text = card.read_text(encoding="utf-8") if card.is_file() else ""
            if text.startswith("---"):  # the Space's front matter is for the Hub, not for people
                text = text.split("---", 2)[-1]
            gr.Markdown(text.replace("![Confusion matrix](confusion.png)", ""))
            if (HERE / "confusion.png").is_file():
                gr.Image(str(HERE / "confusion.png"), label="Confusion matrix of the held-out pictures",
                         interactive=False, show_label=True)
    return demo


demo = build()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=2, max_size=32).launch(max_file_size="20mb", show_error=False)
