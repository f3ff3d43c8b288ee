"""Typed errors whose message a person can act on.

Every front (CLI, UI) shows ``str(error)`` as is, so a message says what went
wrong, naming the file, item or setting, and what to do about it.
"""

from __future__ import annotations


class TLError(Exception):
    """Base class of every error the app expects and explains."""


class InputError(TLError):
    """A mistake in what the user typed or chose (an empty name, a search with no words).

    The web app shows it as one message and leaves every other part of the page as it was;
    API callers and the CLI get it as an error like any other.
    """


class InvalidLabel(InputError):
    """A class name that cannot become a folder name."""


class LabelExists(InputError):
    """A rename to the name of another class: that would be a merge, which must be asked for."""


class OutsideProject(TLError):
    """A path or item that would lead outside the project."""


class ImageRejected(TLError):
    """A file that the image pipeline refuses; ``reason`` says why."""

    def __init__(self, reason: str, file: str = ""):
        self.reason = reason
        self.file = file
        super().__init__(f"{file}: {reason}" if file else reason)


class ItemNotFound(TLError):
    """An item id that the project does not hold (or no longer holds)."""


class NothingToUndo(TLError):
    """Undo or redo with an empty history."""


class ProjectNotFound(TLError):
    """A project folder that does not exist or holds no project."""


class PreflightError(TLError):
    """The dataset cannot be trained on yet (too few classes or images)."""


class TrainerBusy(TLError):
    """Another training is running on this project."""


class RunNotFound(TLError):
    """A run that the project did not record, or whose model is missing."""


class ModelFileInvalid(TLError):
    """A model file whose hash does not match what the project recorded."""


class WeightsMissing(TLError):
    """Pretrained weights that are not on disk and cannot be downloaded."""


class Stopped(TLError):
    """Work that stopped because the user asked it to."""


class SearchUnavailable(TLError):
    """The image search engine refused or could not be reached."""


class FetchRefused(TLError):
    """A URL the safe fetcher will not download (scheme, address, size, time).

    ``final`` is True when trying again later cannot help (a refused address,
    a web page instead of a picture, a missing file); timeouts and server
    errors are not final.
    """

    def __init__(self, message: str, *, final: bool = True):
        self.final = final
        super().__init__(message)


class NotAllowed(TLError):
    """Something only the app's owner may do, asked by a visitor (see :mod:`tl_app.access`).

    The web app shows it like an :class:`InputError`: one message, nothing on the page changed.
    """


class ServeRefused(TLError):
    """A way of serving the app that would let strangers change the owner's data (no login, not shared)."""


class LimitReached(TLError):
    """A visitor used up their allowance on a shared server (pictures classified, searches); try again later."""


class ExportRefused(TLError):
    """An export that would not give the app's answers (the parity check failed), or cannot be written."""


class GpuUnavailable(TLError):
    """ZeroGPU lent no GPU for a training (none free, or more time asked than it lends at once).

    Nothing was trained and nothing recorded; the same training can run on the CPU instead
    (``TrainConfig.cpu``), which the web app offers with the message.
    """


class GpuQuotaExhausted(GpuUnavailable):
    """The GPU time ZeroGPU lends (per visitor and per day) is used up; try later or train on the CPU."""
