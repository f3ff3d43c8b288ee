"""Whether the app's data outlives a restart: on a Space, only a mounted volume (a storage bucket) does.

A Hugging Face Space's own disk is wiped whenever the Space restarts (a rebuild, a
change of settings or hardware, waking from sleep). Storage Buckets attach to a Space
as volumes, mounted at a path the owner picks; ``TL_HOME`` pointed there keeps the
projects. The project folder is judged by the file system that holds it, read from
``/proc/mounts``: the container's root (overlay) or a memory file system is lost on a
restart; any other mounted volume is taken as kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

#: File systems whose content a restart of the Space loses: the container's own layers and memory.
EPHEMERAL_FS = frozenset({"overlay", "aufs", "tmpfs", "ramfs", "rootfs"})


@dataclass
class DataPlace:
    """Where a folder lives: the mount point and file system that hold it, and whether this is a Space."""

    path: Path
    mount: Path
    fstype: str
    on_space: bool

    @property
    def on_volume(self) -> bool:
        """Whether the folder is on a mounted volume of its own (not the container's disk or memory)."""
        return self.mount != Path("/") and self.fstype not in EPHEMERAL_FS

    @property
    def lost_on_restart(self) -> bool:
        """Whether a restart of the Space would wipe the folder (never said off a Space)."""
        return self.on_space and not self.on_volume


def _unescape(field: str) -> str:
    # /proc/mounts writes spaces, tabs, newlines and backslashes in octal (\040 ...)
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mounts(text: Optional[str] = None) -> list[tuple[Path, str]]:
    """(mount point, file system type) of every mount, from ``text`` or ``/proc/mounts`` ([] when unreadable)."""
    if text is None:
        try:
            text = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            mounts.append((Path(_unescape(parts[1])), parts[2]))
    return mounts


def place_of(path: Path, *, env: Optional[Mapping[str, str]] = None, mounts: Optional[str] = None) -> DataPlace:
    """Which mount holds ``path`` (the deepest mount point above it; the last mounted wins).

    ``mounts`` is the text of ``/proc/mounts`` (read when not given). Without it (not
    Linux), the nearest folder above ``path`` that :func:`os.path.ismount` calls a mount
    point is used, with an unknown file system.
    """
    env = os.environ if env is None else env
    path = Path(path).expanduser().resolve()
    on_space = bool(env.get("SPACE_ID"))
    best: Optional[tuple[Path, str]] = None
    for mount, fstype in read_mounts(mounts):
        if (path == mount or mount in path.parents) and (best is None or len(mount.parts) >= len(best[0].parts)):
            best = (mount, fstype)
    if best is None:
        probe = path
        while not os.path.ismount(probe) and probe != probe.parent:
            probe = probe.parent
        best = (probe, "")
    return DataPlace(path=path, mount=best[0], fstype=best[1], on_space=on_space)


def keep_data_warning(project_root: Path, *, env: Optional[Mapping[str, str]] = None,
                      mounts: Optional[str] = None) -> Optional[str]:
    """What the owner of a Space reads when the project would be lost on a restart (Markdown), else None.

    It names the ways to keep the data that exist today; saving the dataset to the
    Hugging Face Hub is planned, and said to be so.
    """
    env = os.environ if env is None else env
    place = place_of(project_root, env=env, mounts=mounts)
    if not place.lost_on_restart:
        return None
    home = env.get("TL_HOME", "").strip()
    why = (f"`TL_HOME` is `{home}`, but that folder is not on a mounted volume" if home
           else "`TL_HOME` is not set")
    return ("⚠️ **This Space will forget your pictures and models when it restarts.** "
            f"The project is in `{place.path}`, on the Space's own disk ({why}); a Space's own disk is wiped "
            "on every restart (a rebuild, a change of settings or hardware, waking from sleep).  \n"
            "To keep them, attach a storage bucket to this Space as a volume (in the Space's settings; "
            "mount it read-write, for example at `/data`) and add the variable `TL_HOME` with that path "
            "(`/data`). The Space restarts, so this project starts again empty there: set it up before you "
            "gather pictures. Saving the dataset to the Hugging Face Hub from the app is planned; this version "
            "cannot do it yet.")
