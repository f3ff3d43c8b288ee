"""Networks: a registry of architectures, their bodies and heads, and safe model files.

A model is ``nn.Sequential(body, head)``, the shape fastai's ``vision_learner``
builds: the body is a pretrained CNN cut before its pooling layer, the head
pools (average and max, concatenated) and classifies. Model files are
safetensors weights plus a JSON description; no pickle is ever written or read.

Only torch and torchvision (or timm for its models) are imported, and only
inside functions, so prediction does not need fastai.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import config
from .errors import ModelFileInvalid, TLError, WeightsMissing

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Arch:
    """An architecture the app can train: how to build it and where its weights live."""

    name: str
    family: str                # "torchvision" or "timm"
    features: int              # channels of the body's output
    tv_weights: str = ""       # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    timm_name: str = ""        # timm model name (with pretrained tag)
    note: str = ""


_REGISTRY: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    _REGISTRY[arch.name] = arch
    return arch


register(Arch("resnet18", "torchvision", 512, "ResNet18_Weights.IMAGENET1K_V1", note="fast, the default"))
register(Arch("resnet34", "torchvision", 512, "ResNet34_Weights.IMAGENET1K_V1", note="a little more accurate, 2x slower"))
register(Arch("resnet50", "torchvision", 2048, "ResNet50_Weights.IMAGENET1K_V2", note="more accurate, 3x slower"))
register(Arch("convnext_tiny", "timm", 768, timm_name="convnext_tiny.in12k_ft_in1k", note="timm; strong, slow on CPU"))
register(Arch("efficientnet_b0", "timm", 1280, timm_name="efficientnet_b0.ra_in1k", note="timm; small"))


def list_archs() -> list[str]:
    """Names of the architectures the app can train."""
    return list(_REGISTRY)


def get_arch(name: str) -> Arch:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TLError(f"Unknown architecture '{name}'. Choose one of: {', '.join(_REGISTRY)}.") from None


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model and feed it images (stored as model.json)."""

    arch: str
    vocab: list[str]
    size: int
    head: str = "fastai"             # "fastai" (fine-tuning head) or "linear" (quick mode)
    mean: tuple = config.IMAGENET_MEAN
    std: tuple = config.IMAGENET_STD
    resize: str = "squish"           # the whole picture is resized to size x size
    hidden: int = 512
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return json.dumps(d, indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        d = json.loads(text)
        if d.get("format_version") != FORMAT_VERSION:
            raise ModelFileInvalid(f"Model format {d.get('format_version')} is not one this version reads.")
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


# --- weights ------------------------------------------------------------------
def torch_hub_dir() -> Path:
    """Where torchvision keeps downloaded weights ($TORCH_HOME/hub/checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _tv_weights(arch: Arch):
    import torchvision.models as tvm

    enum_name, member = arch.tv_weights.split(".")
    return getattr(getattr(tvm, enum_name), member)


def weights_help(arch_name: str) -> str:
    """Exactly which file to put where for an architecture's pretrained weights."""
    arch = get_arch(arch_name)
    if arch.family == "torchvision":
        w = _tv_weights(arch)
        fname = w.url.rsplit("/", 1)[-1]
        return (f"download {w.url} and put it in {torch_hub_dir()} as {fname}")
    from huggingface_hub import constants

    return (f"download the Hugging Face model 'timm/{arch.timm_name}' (file model.safetensors) into "
            f"{constants.HF_HUB_CACHE}, for example with `huggingface-cli download timm/{arch.timm_name}`")


def download_failure(e: BaseException) -> str:
    """Why a download of weights failed, in words (not the library's exception text)."""
    import urllib.error

    reason = getattr(e, "reason", None)
    if isinstance(e, urllib.error.HTTPError):
        return f"the server answered with error {e.code}"
    if isinstance(e, (socket.timeout, TimeoutError)) or isinstance(reason, (socket.timeout, TimeoutError)):
        return "the download timed out"
    if isinstance(reason, socket.gaierror) or isinstance(e, socket.gaierror):
        return "the download server could not be found: is this computer connected to the internet?"
    if isinstance(e, (ConnectionError, urllib.error.URLError)) or isinstance(reason, ConnectionError):
        return "the connection to the download server failed"
    if "hash" in str(e).lower():
        return "the downloaded file was damaged (its checksum did not match)"
    if "offline" in str(e).lower():
        return "the app is in offline mode"
    return "the download failed"


def _missing(arch_name: str, why: str) -> WeightsMissing:
    return WeightsMissing(
        f"The pretrained weights for {arch_name} are not on this computer and could not be downloaded ({why}). "
        f"To fix it, {weights_help(arch_name)}; or train from scratch instead (untick 'Pretrained weights', "
        f"or --no-pretrained on the command line), which needs more images.")


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def load_state_dict_file(path: Path) -> dict:
    """Tensors from a .safetensors file, or from a .pth/.pt file read with torch's weights-only loader.

    A file that holds anything but tensors (a pickled object, a whole model) is refused
    with :class:`WeightsMissing`; nothing in it is ever executed.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsMissing(f"The weights file {path} does not exist.")
    how = ("Give a .safetensors file, or a .pth file written with torch.save(model.state_dict(), ...) "
           "(the weights alone, not the model object).")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)  # refuses anything but tensors
    except Exception as e:  # noqa: BLE001 - any parse failure is the same problem for the user
        kind = "safetensors" if path.suffix.lower() == ".safetensors" else "weights"
        why = "it holds Python objects, not only tensors" if isinstance(e, __import__("pickle").UnpicklingError) \
            else f"it cannot be read as a {kind} file ({type(e).__name__})"
        raise WeightsMissing(f"{path.name} was refused: {why}. {how}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsMissing(f"{path.name} was refused: it does not hold a state_dict (names and tensors). {how}")
    return sd


def _load_into(net, sd: dict, name: str, arch_name: str, *, skip=()) -> None:
    """Load a user's state_dict into ``net``, ignoring classifier tensors; refuse one that does not fit."""
    sd = {k: v for k, v in sd.items() if not k.startswith(tuple(skip))}
    own = net.state_dict()
    wrong = [k for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise WeightsMissing(f"{name} does not fit {arch_name}: {len(wrong)} tensors have other shapes "
                             f"(for example {wrong[0]}). Choose the network these weights were made for.")
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(tuple(skip))]
    if missing or unexpected:
        raise WeightsMissing(f"{name} does not fit {arch_name}: {len(missing)} missing and {len(unexpected)} "
                             "unexpected tensors. Choose the network these weights were made for.")


def store_weights_file(project_root: Path, src: Path, name: str | None = None) -> Path:
    """Check a user's weights file (weights only) and copy it into ``PROJECT/models/weights/``.

    Training reads the copy, so the file stays available (uploads live in temporary folders)
    and a run's configuration names a file inside the project.
    """
    import shutil

    src = Path(src)
    shown = name or src.name
    suffix = Path(shown).suffix.lower()
    if suffix not in (".safetensors", ".pth", ".pt"):
        raise WeightsMissing(f"{shown} was refused: weights files end in .safetensors, .pth or .pt.")
    load_state_dict_file(src)
    h = _sha256(src)
    folder = Path(project_root) / "models" / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{h[:16]}{suffix}"
    if not dest.exists():
        tmp = folder / f".{h[:16]}.{os.getpid()}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return dest


#: In ``PROJECT/models/weights/``: which stored weights files were kept, for which accepted runs.
_KEPT = "kept.json"


def settle_weights_file(project_root: Path, weights: str | Path | None, *, accepted_run: str | None) -> bool:
    """Keep a weights file stored by :func:`store_weights_file` only if a run started from it was accepted.

    Called when the work the file was given for ends: ``accepted_run`` is the run that
    finished and is now in use (None: stopped, failed, not chosen, a learning-rate
    search, or never started). A file no accepted run started from is removed, so a
    stranger's upload never stays in the project; files outside ``models/weights``
    (a path given on the command line) are never touched. Returns whether it is kept.
    """
    if not weights:
        return False
    folder = (Path(project_root) / "models" / "weights").resolve()
    path = Path(weights).resolve()
    if path.parent != folder or not path.is_file():
        return path.is_file()
    kept_file = folder / _KEPT
    try:
        kept = json.loads(kept_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}
    if accepted_run:
        kept.setdefault(path.name, [])
        if accepted_run not in kept[path.name]:
            kept[path.name].append(accepted_run)
            tmp = folder / f".{_KEPT}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(kept), encoding="utf-8")
            os.replace(tmp, kept_file)
        return True
    if kept.get(path.name):  # an earlier accepted run started from the same file
        return True
    path.unlink(missing_ok=True)
    return False


def create_body(arch_name: str, *, pretrained: bool, weights: Path | None = None):
    """The CNN body of an architecture, cut before its pooling layer.

    ``pretrained`` loads ImageNet weights through torchvision's (or timm's) own
    path: files already in ``$TORCH_HOME/hub/checkpoints`` (or the Hugging Face
    cache) are used as they are; otherwise they are downloaded, unless the app
    is offline, and any failure becomes :class:`WeightsMissing` naming the file.
    ``weights`` loads a state_dict the user supplies instead (weights only).
    """
    import torch.nn as nn

    arch = get_arch(arch_name)
    if arch.family == "torchvision":
        import torchvision.models as tvm

        builder: Callable = getattr(tvm, arch.name)
        tv_w = None
        if pretrained and weights is None:
            tv_w = _tv_weights(arch)
            fname = tv_w.url.rsplit("/", 1)[-1]
            if not (torch_hub_dir() / fname).exists() and config.offline():
                raise _missing(arch.name, "the app is in offline mode")
        try:
            with _socket_timeout(30):
                net = builder(weights=tv_w)
        except WeightsMissing:
            raise
        except Exception as e:  # noqa: BLE001 - URLError, HTTPError, timeouts, hash mismatches
            if tv_w is None:
                raise
            raise _missing(arch.name, download_failure(e)) from None
        if weights is not None:
            _load_into(net, load_state_dict_file(weights), Path(weights).name, arch.name, skip=("fc.",))
        body = nn.Sequential(*list(net.children())[:-2])
    else:
        import timm

        kw: dict = {}
        if pretrained and weights is None:
            kw = {"pretrained": True}
            if config.offline():
                os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            with _socket_timeout(30):
                body = timm.create_model(arch.timm_name, num_classes=0, global_pool="", **kw)
        except Exception as e:  # noqa: BLE001
            if not kw:
                raise
            raise _missing(arch.name, download_failure(e)) from None
        if weights is not None:  # our weights-only reader, not timm's file loader
            _load_into(body, load_state_dict_file(weights), Path(weights).name, arch.name,
                       skip=("classifier.", "head.fc.", "fc."))
    return body


@functools.lru_cache(maxsize=None)
def _concat_pool_cls():
    import torch
    import torch.nn as nn

    class AdaptiveConcatPool2d(nn.Module):
        """Max and average pooling side by side (fastai's pooling)."""

        def forward(self, x):
            return torch.cat([nn.functional.adaptive_max_pool2d(x, 1), nn.functional.adaptive_avg_pool2d(x, 1)], 1)

    return AdaptiveConcatPool2d


def _concat_pool():
    return _concat_pool_cls()()


def create_head(kind: str, features: int, n_out: int, hidden: int = 512):
    """A classification head over body features.

    ``"fastai"`` matches fastai's ``create_head``: concat pooling, then
    BatchNorm/Dropout/Linear twice. ``"linear"`` is concat pooling and one
    Linear layer (the quick mode's head, trained on cached features).
    """
    import torch.nn as nn

    if kind == "linear":
        return nn.Sequential(_concat_pool(), nn.Flatten(), nn.Linear(2 * features, n_out))
    if kind == "fastai":
        head = nn.Sequential(
            _concat_pool(), nn.Flatten(),
            nn.BatchNorm1d(2 * features), nn.Dropout(0.25), nn.Linear(2 * features, hidden, bias=False), nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden), nn.Dropout(0.5), nn.Linear(hidden, n_out, bias=False),
        )
        for m in head.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
        return head
    raise ValueError(f"unknown head kind {kind!r}")


def create_model(spec: ModelSpec, *, pretrained: bool = False, weights: Path | None = None):
    """``nn.Sequential(body, head)`` for a spec; the body pretrained when asked."""
    import torch.nn as nn

    arch = get_arch(spec.arch)
    body = create_body(spec.arch, pretrained=pretrained, weights=weights)
    return nn.Sequential(body, create_head(spec.head, arch.features, len(spec.vocab), spec.hidden))


# --- model files ----------------------------------------------------------------
def save_model(model, spec: ModelSpec, folder: Path) -> str:
    """Write ``model.safetensors`` and ``model.json`` atomically; return the weights' sha256."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / f".model.{os.getpid()}.tmp"
    save_file(sd, str(tmp), metadata={"arch": spec.arch})
    sha = _sha256(tmp)
    os.replace(tmp, folder / "model.safetensors")
    tmpj = folder / f".model.{os.getpid()}.json.tmp"
    tmpj.write_text(spec.to_json(), encoding="utf-8")
    os.replace(tmpj, folder / "model.json")
    return sha


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def load_model(folder: Path, expected_sha256: str, project_root: Path | None = None):
    """Load a model the app wrote, after checking its weights against the recorded hash.

    A quick-mode model names its body's weights file by hash (shared between
    runs, under ``models/bodies/`` of the project); that file is checked too.
    Returns ``(model in eval mode, spec)``. Raises :class:`ModelFileInvalid`
    when a file is missing or was changed since it was recorded.
    """
    from safetensors.torch import load_file

    from .project import inside

    wfile, jfile = folder / "model.safetensors", folder / "model.json"
    if not wfile.is_file() or not jfile.is_file():
        raise ModelFileInvalid(f"The model files of this run are missing from {folder}.")
    if _sha256(wfile) != expected_sha256:
        raise ModelFileInvalid(f"{wfile} was changed after training; the app only loads models it wrote.")
    spec = ModelSpec.from_json(jfile.read_text(encoding="utf-8"))
    state = load_file(str(wfile))
    body_rel = spec.extra.get("body_file")
    if body_rel:
        root = project_root or folder.parent.parent
        bfile = inside(root, body_rel)
        if not bfile.is_file():
            raise ModelFileInvalid(f"The network body this model needs ({body_rel}) is missing; train again.")
        if _sha256(bfile) != spec.extra.get("body_sha256"):
            raise ModelFileInvalid(f"{bfile} was changed after training; the app only loads models it wrote.")
        state.update({f"0.{k}": v for k, v in load_file(str(bfile)).items()})
    model = create_model(spec, pretrained=False)
    model.load_state_dict(state)
    model.eval()
    return model, spec


def fold_batchnorm(model, spec: ModelSpec):
    """For inference only: each BatchNorm folded into the convolution just before it, in place.

    A convolution followed by a batch norm in eval mode is one affine map: one convolution with
    scaled weights and a bias does both, sparing a pass over every activation (20 of them in
    resnet18; a tenth of a CPU forward). Folded are the pairs a Sequential runs one after the
    other and the ``convN``/``bnN`` pairs of torchvision's ResNet blocks, whose forward runs them
    in turn. The modules keep their names (hooks on stages still apply). The folded model's
    answers are checked against the model's own on one random batch; if they differ by more
    than 1e-3 the model is returned unfolded. Returns ``(model, folded)`` (how many pairs).
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torchvision.models.resnet import BasicBlock, Bottleneck

    model.eval()
    pairs = []
    for mod in model.modules():
        names = list(mod._modules)
        if isinstance(mod, torch.nn.Sequential):
            pairs += [(mod, a, b) for a, b in zip(names, names[1:])]
        if isinstance(mod, (BasicBlock, Bottleneck)):
            pairs += [(mod, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
    pairs = [(m, a, b) for m, a, b in pairs if type(m._modules.get(a)) is torch.nn.Conv2d
             and type(m._modules.get(b)) is torch.nn.BatchNorm2d and m._modules[b].track_running_stats]
    if not pairs:
        return model, 0
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, spec.size, spec.size, generator=gen)
    with torch.inference_mode():
        before = model(x)
    kept = [(m, a, b, m._modules[a], m._modules[b]) for m, a, b in pairs]
    with torch.no_grad():
        for m, a, b, conv, bn in kept:
            m._modules[a] = fuse_conv_bn_eval(conv, bn)
            m._modules[b] = torch.nn.Identity()
    with torch.inference_mode():
        after = model(x)
    if not torch.allclose(before, after, rtol=1e-3, atol=1e-3):  # a pair that was not run in turn: undo
        for m, a, b, conv, bn in kept:
            m._modules[a], m._modules[b] = conv, bn
        return model, 0
    return model, len(kept)


def to_tensor_batch(images, spec: ModelSpec):
    """RGB PIL images to a normalised float batch, exactly as validation saw them."""
    import numpy as np
    import torch
    from PIL import Image

    arr = np.stack([np.asarray(resize_for(im, spec.size), dtype=np.uint8) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


def resize_for(im, size: int):
    """The one resize used for training, validation and prediction: the whole picture, squished."""
    from PIL import Image

    if im.size == (size, size):
        return im
    return im.resize((size, size), Image.Resampling.BILINEAR)
