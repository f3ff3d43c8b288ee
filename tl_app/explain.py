"""Why the model gave its answer: a Grad-CAM heatmap over the picture (Selvaraju et al., 2017).

The app's models are ``nn.Sequential(body, head)`` (:mod:`tl_app.models`): the body is the
network cut before its pooling, so its output *is* the last convolutional block's feature
map, for every architecture the app trains (resnets, convnext, efficientnet). Grad-CAM
weighs each channel of that map by the mean gradient of the class's score with respect
to it, keeps the positive part and scales it to [0, 1]. The body runs once without
gradients; only the small head is differentiated, so a heatmap costs about one prediction.

Written by hand rather than with ``pytorch-grad-cam`` (``grad-cam`` on PyPI): that package
finds the layer through forward/backward hooks we do not need here and pulls in OpenCV,
ttach, matplotlib and scikit-learn for resizing and colouring that Pillow and numpy do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import InputError
from .compute import on_compute_thread
from .predict import _as_stored, _pixels_from_bytes, model_for
from .project import Project

#: Longest side of the picture the heatmap is drawn over.
SHOW_SIDE = 512


@dataclass
class Explanation:
    """A heatmap for one picture: ``heat`` (h, w) in [0, 1] on the network's grid, ``overlay`` drawn over it.

    ``label`` is the class explained (the predicted one unless asked otherwise) and ``confidence``
    the model's probability for it.
    """

    label: str
    confidence: float
    heat: object            # numpy float32 (h, w)
    overlay: object         # PIL.Image, RGB, at most SHOW_SIDE a side

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.overlay.save(buf, format="PNG")
        return buf.getvalue()


def grad_cam(model, x, class_index: Optional[int] = None):
    """``(heat, probs)`` for a normalised batch of one picture ``x`` (1, 3, S, S).

    ``heat`` is the Grad-CAM map of ``class_index`` (default: the top class) on the body's
    output grid, scaled to [0, 1] (all zeros when nothing speaks for the class); ``probs``
    the softmax over the classes.
    """
    import torch

    model.eval()
    body, head = model[0], model[1]
    with torch.no_grad():
        feats = body(x)
    with torch.enable_grad():
        a = feats.detach().float().requires_grad_(True)
        logits = head(a).float()
        probs = torch.softmax(logits.detach(), 1)[0]
        c = int(probs.argmax()) if class_index is None else int(class_index)
        (grad,) = torch.autograd.grad(logits[0, c], a)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * a.detach()).sum(1))[0]
    top = float(cam.max())
    cam = cam / top if top > 0 else torch.zeros_like(cam)
    return cam.numpy().astype("float32"), probs.numpy()


def _colour(heat):
    """A blue -> cyan -> yellow -> red colour scale for values in [0, 1] (uint8 RGB)."""
    import numpy as np

    stops = np.array([0.0, 0.35, 0.65, 1.0])
    colours = np.array([[20, 40, 160], [0, 190, 220], [250, 220, 0], [220, 20, 20]], dtype=np.float32)
    out = np.stack([np.interp(heat, stops, colours[:, k]) for k in range(3)], axis=-1)
    return out.astype(np.uint8)


def overlay(picture, heat):
    """The picture with the heatmap drawn over it: strong where the model looked, faint elsewhere."""
    import numpy as np
    from PIL import Image

    pic = picture.convert("RGB")
    pic.thumbnail((SHOW_SIDE, SHOW_SIDE))
    if max(pic.size) < SHOW_SIDE // 2:  # a small picture is enlarged, so the heatmap can be seen
        k = (SHOW_SIDE // 2) / max(pic.size)
        pic = pic.resize((max(1, round(pic.width * k)), max(1, round(pic.height * k))), Image.BICUBIC)
    # The network saw the picture squished to a square: stretch its grid back to the picture's shape.
    h = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), "L").resize(pic.size, Image.BILINEAR)
    h = np.asarray(h, dtype=np.float32)[..., None] / 255.0
    alpha = 0.15 + 0.5 * h
    out = np.asarray(pic, dtype=np.float32) * (1 - alpha) + _colour(h[..., 0]) * alpha
    return Image.fromarray(out.clip(0, 255).astype(np.uint8), "RGB")


def explain(project: Project, src: "str | Path | bytes", *, label: Optional[str] = None,
            run_id: Optional[str] = None) -> Explanation:
    """A Grad-CAM heatmap of ``label`` (default: the predicted class) over a picture, with the model in use.

    The picture goes through the same pipeline as a prediction, so the heatmap explains the
    answer Classify shows. Raises :class:`tl_app.errors.ImageRejected` for a file that is not
    a picture and :class:`InputError` for a class the model does not know.
    """
    import numpy as np
    import torch
    from PIL import Image

    model, spec, _ = model_for(project, run_id)
    data = _as_stored(project, Path(src) if isinstance(src, str) else src)
    pixels = _pixels_from_bytes(data, spec.size)
    index = None
    if label is not None:
        if label not in spec.vocab:
            raise InputError(f"The model knows no class '{label}' (its classes: {', '.join(spec.vocab)}).")
        index = spec.vocab.index(label)
    x = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)[None].float().div_(255)
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    heat, probs = on_compute_thread(grad_cam, model, x, index)  # where Classify's passes run (tl_app.compute)
    c = int(np.argmax(probs)) if index is None else index
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
        im.draft("RGB", (SHOW_SIDE, SHOW_SIDE))
        shown = overlay(im, heat)
    return Explanation(label=spec.vocab[c], confidence=float(probs[c]), heat=heat, overlay=shown)
