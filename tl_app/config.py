"""Settings, limits, paths and the help strings shared by the CLI and the UI.

Nothing here touches the disk or the network: functions compute paths and read
the environment when they are called, never at import time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# --- images -----------------------------------------------------------------
#: Formats the image pipeline opens; every other parser in Pillow stays off.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
#: Images smaller than this on either side are refused.
MIN_SIDE = 32
#: Stored images are scaled down so that their longer side is at most this.
#: Training sees 224 px or so; keeping 12-megapixel originals would only slow
#: every epoch down. The user's own files are never modified.
MAX_STORED_SIDE = 1024
JPEG_QUALITY = 92
#: Largest file the importer reads (bytes).
MAX_IMPORT_BYTES = 50 * 1024 * 1024
#: Largest total a zip file may unpack to (bytes), against zip bombs and floods of a shared server's disk:
#: well above what the largest upload (50 MB of pictures, which barely compress) unpacks to.
MAX_ZIP_TOTAL_BYTES = 500 * 1000 * 1000
STORED_EXT = ".jpg"

# --- labels -----------------------------------------------------------------
MAX_LABEL_LEN = 64

# --- training ---------------------------------------------------------------
DEFAULT_ARCH = "resnet18"
DEFAULT_EPOCHS = 1
DEFAULT_SIZE = 224
DEFAULT_BATCH_SIZE = 32
VALID_PCT = 0.2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# --- web --------------------------------------------------------------------
DEFAULT_PORT = 7860
DEFAULT_HOST = "127.0.0.1"
#: On a shared app, each visitor classifies at most this many pictures per window (seconds).
SHARED_CLASSIFY_LIMIT = 100
SHARED_CLASSIFY_WINDOW = 600.0


def default_host() -> str:
    """Where the web app listens unless told otherwise: ``TL_HOST``, else this computer only."""
    return os.environ.get("TL_HOST", "").strip() or DEFAULT_HOST


def env_flag(name: str) -> bool:
    """True when the environment variable is set to something other than 0/false/empty."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def offline() -> bool:
    """Whether the app must not touch the network for weights (``TL_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return env_flag("TL_OFFLINE") or env_flag("HF_HUB_OFFLINE")


def data_dir() -> Path:
    """The user's data folder for the app (``TL_HOME`` overrides it)."""
    home = os.environ.get("TL_HOME")
    if home:
        return Path(home).expanduser().resolve()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return (base / "tl_app").resolve()


def default_project_dir() -> Path:
    """Where ``./scripts/run`` and ``python app.py`` keep the default project."""
    return data_dir() / "projects" / "default"


# --- help strings: one place for CLI help and UI labels ---------------------
HELP = {
    "project": "Project folder (created on first import).",
    "label": "Class name for the images (letters, digits, spaces, - and _).",
    "arch": "Network architecture: resnet18 (fast, default), resnet34, resnet50, convnext_tiny, efficientnet_b0.",
    "epochs": "How many passes over the training images.",
    "size": "Images are resized to this many pixels on each side for training.",
    "no_pretrained": "Start from random weights instead of ImageNet-pretrained ones (works offline, needs more data).",
    "quick": "Quick mode: train only a last layer on features of the pretrained network, computed once per "
             "picture and cached; a first model in seconds.",
    "lr": "Learning rate for full fine-tuning (default 0.002); lr-find suggests one for your pictures.",
    "processes": "Fine-tune on N processes on this machine (one per GPU, or CPU processes), with Hugging Face "
                 "Accelerate; one run is recorded. On several machines use `accelerate launch -m tl_app train ...`.",
    "patience": "Early stopping: end fine-tuning when the validation loss has not improved for this many epochs "
                "(the best epoch's weights are kept either way).",
    "weights": "Your own starting weights for the chosen network: a .safetensors file or a .pth state_dict, "
               "read as tensors only; used instead of the ImageNet weights.",
    "cpu": "Train on the CPU even where a GPU is available (for example when ZeroGPU's daily GPU time is used up).",
    "top": "How many items to show.",
    "json": "Print exactly one JSON document on stdout (messages go to stderr).",
    "import_src": "Folders (a sub-folder per class), zip files or image files.",
    "undo": "Undo the last action: a delete, a move, a class renamed, merged or deleted (files come back byte for byte).",
    "redo": "Redo the last undone action.",
}
