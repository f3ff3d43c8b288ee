"""Turning pictures into what a network sees: decoded pixels, pooled features, logits.

One module that training, prediction, Review and the none-of-these score all
import, so that none of them has to import another for it (train -> review ->
predict -> train was a circle). Torch and Pillow are imported inside the
functions: importing this module is cheap.
"""

from __future__ import annotations

from typing import Callable, Optional

from .errors import Stopped
from .jobs import StopToken
from .models import ModelSpec, resize_for

EventFn = Callable[[dict], None]


def _no_events(_: dict) -> None:
    pass


def load_image_for_model(src, size: int):
    """Decode a stored image and resize it for the network (the one path for training and prediction)."""
    from PIL import Image

    with Image.open(src, formats=["JPEG"]) as im:
        im.draft("RGB", (size, size))
        rgb = im.convert("RGB")
    return resize_for(rgb, size)


def embed_logits(model, pixels, spec: ModelSpec, *, batch_size: int = 64, device=None,
                 stop: Optional[StopToken] = None, events: EventFn = _no_events, phase: str = "scoring"):
    """``(logits, features)`` for uint8 images (N, S, S, 3) in one clean pass (eval mode, no augmentation).

    ``features`` are the pooled body outputs the head starts from (the space
    Review looks for neighbours, duplicates and outliers in, and the none-of-these
    score measures distances in), as float32; ``logits`` the head's raw outputs
    (the energy score needs them; softmax loses their scale).
    """
    import numpy as np
    import torch

    device = device or torch.device("cpu")
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    model.eval()
    body, pool, rest = model[0], model[1][:2], model[1][2:]
    logits, feats = [], []
    n = len(pixels)
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            if stop is not None and stop.is_set():
                raise Stopped("Stopped while scoring images.")
            xb = torch.from_numpy(pixels[s:s + batch_size]).to(device).permute(0, 3, 1, 2).float().div_(255)
            xb = ((xb - mean) / std).contiguous(memory_format=torch.channels_last)
            f = pool(body(xb)).float()
            logits.append(rest(f).float().cpu())
            feats.append(f.cpu())
            events({"type": "phase", "phase": phase, "done": min(n, s + batch_size), "total": n})
    if not logits:
        return np.zeros((0, len(spec.vocab)), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


def softmax(logits):
    """Row-wise softmax of a numpy array, as float32."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def embed_pixels(model, pixels, spec: ModelSpec, **kw):
    """``(probs, features)`` for uint8 images (N, S, S, 3): :func:`embed_logits` with probabilities."""
    logits, feats = embed_logits(model, pixels, spec, **kw)
    return softmax(logits), feats


def predict_pixels(model, pixels, spec: ModelSpec, **kw):
    """Class probabilities for a uint8 array of images (N, S, S, 3), without augmentation."""
    return embed_pixels(model, pixels, spec, **kw)[0]
