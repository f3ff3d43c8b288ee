"""Whether the data outlives a restart of a Space, and the owner's warning when it does not."""

from __future__ import annotations

from pathlib import Path

from tl_app.storage import keep_data_warning, place_of, read_mounts

SPACE = {"SPACE_ID": "ann/classifier"}
# /proc/mounts of a Space with a bucket attached at /data (the bucket's file system type is not ours to know).
MOUNTS = """overlay / overlay rw,relatime,lowerdir=/l,upperdir=/u,workdir=/w 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev tmpfs rw,nosuid,size=65536k,mode=755 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
hf-bucket /data fuse rw,nosuid,nodev,relatime,user_id=1000,group_id=1000 0 0
hf-bucket /mnt/my\\040bucket fuse rw,relatime 0 0
"""


def test_a_project_on_the_spaces_own_disk_warns_its_owner_with_the_ways_to_keep_it():
    root = Path("/home/user/.local/share/tl_app/projects/default")
    text = keep_data_warning(root, env=SPACE, mounts=MOUNTS)
    assert text is not None
    assert "This Space will forget your pictures and models when it restarts" in text
    assert f"`{root}`" in text and "`TL_HOME` is not set" in text
    assert "attach a storage bucket to this Space as a volume" in text and "`TL_HOME`" in text
    # The Hub is not a way yet: said honestly, and nothing offers it.
    assert "Saving the dataset to the Hugging Face Hub from the app is planned; this version cannot do it yet" in text


def test_tl_home_set_but_not_on_a_volume_is_named():
    text = keep_data_warning(Path("/home/user/app/data/projects/default"), env={**SPACE, "TL_HOME": "/home/user/app/data"},
                             mounts=MOUNTS)
    assert "`TL_HOME` is `/home/user/app/data`, but that folder is not on a mounted volume" in text


def test_a_project_on_a_bucket_volume_or_off_a_space_gets_no_warning():
    on_bucket = Path("/data/projects/default")
    assert keep_data_warning(on_bucket, env={**SPACE, "TL_HOME": "/data"}, mounts=MOUNTS) is None
    assert keep_data_warning(Path("/mnt/my bucket/p"), env=SPACE, mounts=MOUNTS) is None  # \040 is a space
    # Off a Space (no SPACE_ID) the disk is the person's own: nothing to say.
    assert keep_data_warning(Path("/home/user/.local/share/tl_app"), env={}, mounts=MOUNTS) is None


def test_memory_file_systems_are_lost_too():
    place = place_of(Path("/tmp/tl/projects/default"), env=SPACE, mounts=MOUNTS)
    assert place.mount == Path("/tmp") and place.fstype == "tmpfs" and place.lost_on_restart
    assert keep_data_warning(Path("/tmp/tl/projects/default"), env=SPACE, mounts=MOUNTS) is not None


def test_the_deepest_mount_holds_the_folder_and_this_machines_mounts_are_read():
    place = place_of(Path("/data/projects/default"), env=SPACE, mounts=MOUNTS)
    assert place.mount == Path("/data") and place.fstype == "fuse" and place.on_volume
    assert (Path("/"), "overlay") in read_mounts(MOUNTS)
    here = place_of(Path(__file__), env=SPACE)  # /proc/mounts of this machine
    assert here.mount in Path(__file__).resolve().parents and here.fstype
