"""The Train tab's sharing panel through gradio_client: downloads, restoring a project zip, publishing."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from e2e.harness import serve
from hubstandin import TOKEN, USER, HubStandIn
from tl_app.project import Project
from test_publish import online  # noqa: F401 - the fixture


def _client(url: str) -> Client:
    return Client(url, verbose=False)


def test_downloads_and_a_project_zip_restored_into_an_empty_app_then_beside_a_full_one(trained_project, tmp_path):
    with serve(trained_project.root) as srv:
        c = _client(srv.url)
        path, status = c.predict(api_name="/export_dataset")
        assert status.startswith("Wrote trained-dataset.zip (32 pictures in 2 classes")
        assert "metadata.csv" in zipfile.ZipFile(path).namelist()
        project_zip, status = c.predict(api_name="/export_project")
        assert "1 run" in status and "--as FOLDER" in status
        assert Path(project_zip).name == "trained-project.zip"

    empty = tmp_path / "apps" / "fresh"
    with serve(empty) as srv:
        c = _client(srv.url)
        _, status = c.predict(handle_file(project_zip), api_name="/restore_project")
        assert status.startswith("Restored 32 pictures in 2 classes") and "this app's project now" in status
        assert Project.open(empty).label_counts() == trained_project.label_counts()
        # The app's project now holds pictures: a second restore goes beside it, and says how to open it.
        _, status = c.predict(handle_file(project_zip), api_name="/restore_project")
        beside = tmp_path / "apps" / "trained-project"
        assert f"a new project in `{beside}`" in status and f'--project "{beside}"' in status
        assert Project.open(beside).label_counts() == trained_project.label_counts()
        assert Project.open(empty).label_counts() == trained_project.label_counts()  # untouched


def test_a_shared_app_restores_only_into_an_empty_project(trained_project, tmp_path):
    zip_path = tmp_path / "p.zip"
    from tl_app.share.archive import export_project

    export_project(trained_project, zip_path)
    with serve(trained_project.root, shared=True, auth=[("ann", "pw")]) as srv:
        c = Client(srv.url, verbose=False, auth=("ann", "pw"))
        with pytest.raises(AppError, match="only into an empty project"):
            c.predict(handle_file(zip_path), api_name="/restore_project")
    assert not (tmp_path / "p").exists() and len(list(trained_project.root.parent.iterdir())) == 2


def test_publish_from_the_panel_says_where_it_went_or_why_not(project, tmp_path, online, monkeypatch):  # noqa: F811
    import imagegen
    from tl_app.importer import import_files

    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=2)])
    with HubStandIn() as hub, serve(project.root) as srv:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        c = _client(srv.url)
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        status = c.predict("dataset", "colours", True, api_name="/publish")
        assert status.startswith("Not published. The Hugging Face Hub refused the token")
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        status = c.predict("dataset", "colours", True, api_name="/publish")
        assert status.startswith(f"Published the dataset to {hub.url}/datasets/{USER}/colours (6 files, private)")
        assert len(hub.repos[("dataset", f"{USER}/colours")].files) == 6
        with pytest.raises(AppError, match="not a repository name"):
            c.predict("dataset", "a b", True, api_name="/publish")


def test_exports_left_by_servers_that_ended_are_removed_at_the_first_export(tmp_path, monkeypatch):
    import os
    import tempfile

    from tl_app.ui import share_panel

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = tmp_path / "tl_app-exports-99999999"  # above any pid Linux gives out
    running = tmp_path / f"tl_app-exports-{os.getppid()}"
    for d in (ended, running):
        d.mkdir()
        (d / "project.zip").write_bytes(b"x" * 1000)
    mine = share_panel._export_dir()
    assert mine == tmp_path / f"tl_app-exports-{os.getpid()}" and mine.is_dir()
    assert not ended.exists()
    assert (running / "project.zip").exists()
