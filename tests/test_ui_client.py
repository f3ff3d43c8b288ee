"""Every tab's endpoints, driven over HTTP with gradio_client as another program would.

The app runs in this process on a free loopback port (see ``e2e/harness.py``);
each test talks to it through ``gradio_client.Client`` only, then checks the
project on disk where the answer alone would not prove the work was done.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import imagegen
from e2e.harness import predict_api, predict_http, serve, wait_until
from tl_app import review, run_choice, runner, runs
from tl_app.importer import import_files
from tl_app.train import TrainConfig, train
from tl_app.ui.review_tab import ALL


def _client(url: str) -> Client:
    # Files in outputs stay on the server (as FileData dicts with a url): downloading every
    # thumbnail of every answer would triple the time; one test fetches one to prove it works.
    return Client(url, verbose=False, download_files=False)


def _table(payload: dict) -> list[list]:
    """The rows of a Dataframe output."""
    return [list(r) for r in payload["data"]]


def _html_rows(html: str) -> list[list[str]]:
    """The body rows of a table shown as HTML (:func:`tl_app.ui.adapters.html_table`), as text."""
    import re
    from html import unescape

    body = html.split("<tbody>", 1)[1]
    return [[unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)] for row in re.findall(r"<tr>(.*?)</tr>", body)]


def _counts(payload: dict) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in _table(payload)}


def _value(out):
    """A component's value, whether the handler returned it plainly or as an update (gr.Dropdown(...))."""
    return out.get("value") if isinstance(out, dict) and out.get("__type__") == "update" else out


def _choices(out) -> list:
    return [c[1] for c in out["choices"]]


def _thumb_sha(entry: dict) -> str:
    """The content hash a gallery thumbnail is named after (``<sha256>-256.jpg``)."""
    return Path(entry["image"]["path"]).name.split("-")[0]


def _fake_jpg(folder: Path, name: str = "notes.jpg") -> Path:
    p = folder / name
    p.write_text("these are my notes, not a picture\n" * 20, encoding="utf-8")
    return p


def _error(call) -> str:
    with pytest.raises(AppError) as ei:
        call()
    return str(ei.value)


# --- Search & download ------------------------------------------------------------------
#: What the Search & download tab's actions return over the API, in order (before their own extras).
VIEW = ("classes", "target", "browse_class", "gallery", "selected", "note", "manage_pick", "move_to")


def _view(out) -> dict:
    return dict(zip(VIEW, out))


def test_search_tab(tmp_path, colour_folder):
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)

        out = c.predict("red", api_name="/add_class")
        v, new_class = _view(out), out[-1]
        assert _counts(v["classes"]) == {"red": 0}
        assert _value(v["target"]) == _value(v["browse_class"]) == "red" and new_class == "" and v["gallery"] == []
        assert _choices(v["target"]) == _choices(v["browse_class"]) == _choices(v["manage_pick"]) == ["red"]

        bad = _fake_jpg(tmp_path)
        reds = sorted((colour_folder / "red").glob("*.png"))
        out = c.predict("red", [handle_file(p) for p in reds] + [handle_file(bad)], api_name="/add_files")
        v, (result, files) = _view(out), out[len(VIEW):]
        assert _counts(v["classes"]) == {"red": 12}
        assert "12 imported" in result and "1 refused" in result
        assert "`notes.jpg`:" in result and "text" in result  # the refused file, named, with its reason
        assert len(v["gallery"]) == 12 and files is None  # the drop area is emptied for the next batch

        # A class typed in the dropdown is created on the way.
        blues = sorted((colour_folder / "blue").glob("*.png"))
        out = c.predict("blue", [handle_file(p) for p in blues[:10]], api_name="/add_files")
        assert _counts(_view(out)["classes"]) == {"red": 12, "blue": 10}
        # Sending the same pictures again adds nothing.
        out = c.predict("blue", [handle_file(p) for p in blues], api_name="/add_files")
        assert _counts(_view(out)["classes"]) == {"red": 12, "blue": 12}
        assert "2 imported" in out[len(VIEW)] and "10 duplicates skipped" in out[len(VIEW)]

        gallery, selected, note = c.predict("red", api_name="/browse")
        # Captioned by the file name the picture came with, never by an item id.
        assert len(gallery) == 12 and {g["caption"] for g in gallery} == {f"☐ {p.name}" for p in reds}
        assert selected == "" and "Click pictures to select them" in note

        # Core errors reach the caller as the plain message, not a traceback or "something went wrong".
        msg = _error(lambda: c.predict("../x", api_name="/add_class"))
        assert "cannot have" in msg and "'/'" in msg and "went wrong" not in msg
        msg = _error(lambda: c.predict("red", [], api_name="/add_files"))
        assert "Drop some pictures" in msg
        assert srv.project.labels() == ["red", "blue"]


def test_import_folder_and_train_tab(tmp_path, colour_folder, fake_pretrained):
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        assert c.predict(api_name="/stop") == "Nothing is training."

        msg = _error(lambda: c.predict(size=64, api_name="/train"))
        assert "at least two classes" in msg

        table, *_, result = c.predict(str(colour_folder), api_name="/import_folder")
        assert _counts(table) == {"red": 12, "blue": 12} and "24 imported" in result
        assert "is not a folder" in _error(lambda: c.predict(str(tmp_path / "nope"), api_name="/import_folder"))

        # The first press, with the defaults: quick mode on the pretrained network. The handler is a
        # generator; predict() returns what it yielded last.
        status, device, plot, report, figure, confusion, per_class, table, use_run, mode, in_use = c.predict(
            size=64, api_name="/train")
        quick_run = runs.list_runs(srv.project)[0]
        assert quick_run.mode == "quick" and quick_run.status == "finished" and quick_run.has_model, quick_run
        assert quick_run.name.startswith("Quick · resnet18 · ")  # named by mode, network and time
        assert status.startswith(f"{quick_run.name} finished in ") and "right on its held-out pictures" in status
        assert "Review and Classify use it now." in status and quick_run.id not in status
        assert "Full fine-tuning is now selected" in status and mode == "full"  # to fine-tune further
        assert device.startswith("**Device:** CPU")
        assert f"**{quick_run.name}** (finished, in use)" in report and f"`--run {quick_run.id}`" in report  # for the CLI
        assert figure["type"] == "matplotlib" and figure["plot"].startswith("data:image/png;base64,")
        assert [r[0] for r in _html_rows(confusion)] == ["blue", "red"]
        assert {r[0] for r in _html_rows(per_class)} == {"blue", "red"}
        assert {r[2] for r in plot["data"]} == {"training loss", "validation loss", "accuracy"}
        assert _value(use_run) == quick_run.id and _table(table)[0][:2] == [quick_run.name, "finished (in use)"]
        assert in_use.startswith(f"**In use: {quick_run.name}:**") and "first model" in in_use

        # "Suggest a learning rate" fills the learning rate that full fine-tuning then uses.
        status, lr, device = c.predict(size=64, pretrained=False, api_name="/lr_find")
        assert 0 < float(lr) < 10 and f"**{lr}**" in status, status
        assert device.startswith("**Device:** CPU") and not any(srv.project.cache_dir.joinpath("jobs").glob("*"))

        status, device, plot, report, figure, confusion, per_class, table, use_run, mode, in_use = c.predict(
            mode="full", epochs=1, size=64, pretrained=False, lr=lr, api_name="/train")
        run = runs.list_runs(srv.project)[0]
        assert run.status == "finished" and run.mode == "finetune" and run.config["lr"] == float(lr), run
        assert run.name.startswith("Full fine-tuning · resnet18 · ")
        assert status.startswith(f"{run.name} finished") and "right on its held-out pictures" in status
        # The new run is used only if it did better than the quick run on the same held-out pictures.
        chosen = run_choice.in_use(srv.project)
        assert chosen.pictures == 4 and {chosen.run.id, chosen.other.id} == {run.id, quick_run.id}, chosen
        if chosen.run.id == run.id:
            assert chosen.how == "better" and "Review and Classify use it now: on the same 4" in status
        else:
            assert chosen.how == "kept" and f"Not used: the model in use, {quick_run.name}, did better" in status
        assert _value(use_run) == chosen.run.id and _choices(use_run) == [run.id, quick_run.id]
        assert f"**{run.name}** (finished" in report  # the details of the run that just ended
        assert in_use.startswith(f"**In use: {chosen.run.name}:**") and "on 4 held-out pictures" in in_use
        rows = {r[0]: r[1] for r in _table(table)}
        assert rows[chosen.run.name] == "finished (in use)" and rows[chosen.other.name] == "finished"
        # fine_tune: the warm-up (epoch 0, last layers only), then the 1 epoch asked for.
        assert [r[0] for r in plot["data"] if r[2] == "accuracy"] == [0, 1]
        assert runner.current_job(srv.project) is None  # nothing left running

        # Choosing a run by hand: it is used, and the tab says it was the person's choice.
        other = chosen.other
        report, plot, figure, confusion, per_class, table, in_use = c.predict(other.id, api_name="/use_run")
        assert f"**{other.name}** (finished, in use)" in report and runs.active_run(srv.project).id == other.id
        assert in_use.startswith(f"**In use: {other.name}:**") and "you chose it" in in_use
        assert figure["type"] == "matplotlib" and len(plot["data"]) >= 6
        assert "is not a run" in _error(lambda: c.predict("../../etc", api_name="/use_run"))
        assert c.predict(api_name="/stop") == "Nothing is training."


def test_train_tab_quick_mode_needs_weights_and_takes_a_weights_file(tmp_path, colour_folder):
    """No pretrained weights on this computer: quick mode says so; a weights file given in the tab works."""
    import torch
    import torchvision

    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        c.predict(str(colour_folder), api_name="/import_folder")
        msg = _error(lambda: c.predict(mode="quick", size=64, pretrained=False, api_name="/train"))
        assert "Quick mode trains only the last layer" in msg and runs.list_runs(srv.project) == []

        wfile = tmp_path / "my weights.pth"
        torch.save(torchvision.models.resnet18().state_dict(), wfile)
        status, *_ = c.predict(mode="quick", size=64, pretrained=False, weights=handle_file(wfile), api_name="/train")
        run = runs.list_runs(srv.project)[0]
        assert run.status == "finished" and status.startswith(f"{run.name} finished"), status
        copy = Path(run.config["weights"])  # the upload's copy inside the project, kept for later runs
        assert copy.parent == srv.project.root / "models" / "weights" and copy.read_bytes() == wfile.read_bytes()

        fake = tmp_path / "model.pth"
        fake.write_text("not weights")
        msg = _error(lambda: c.predict(mode="quick", size=64, weights=handle_file(fake), api_name="/train"))
        assert "model.pth was refused" in msg and "went wrong" not in msg


def test_new_classes_and_runs_reach_every_caller(tmp_path, colour_folder):
    """Choices are refreshed per browser session; another program's session must not need that."""
    with serve(tmp_path / "proj") as srv:
        _client(srv.url).predict(str(colour_folder), api_name="/import_folder")
        # A run recorded outside this session, as the CLI would while the app runs.
        rep = train(srv.project, TrainConfig(size=64, epochs=1, pretrained=False))
        later = _client(srv.url)
        assert len(later.predict("red", api_name="/browse")[0]) == 12
        assert len(_review(later, "blue", "", "")["gallery"]) == 12
        item = srv.project.items(label="blue")[0].id
        assert _review(later, item, "red", "blue", "", "", api_name="/relabel")["status"] == "Moved 1 image to 'red'."
        report, *_ = later.predict(rep.run, api_name="/use_run")
        assert f"`--run {rep.run}`" in report and runs.active_run(srv.project).id == rep.run
        assert later.predict("nobody", api_name="/browse")[0] == []


def _start_long_training(c, srv) -> tuple:
    """Start a long training through the API; returns (job, run) once the run is recorded."""
    job = c.submit(mode="full", epochs=20, size=64, pretrained=False, api_name="/train")
    assert wait_until(lambda: job.outputs(), timeout=60), job.status()
    run = wait_until(lambda: runs.list_runs(srv.project) and runs.list_runs(srv.project)[0], timeout=60)
    assert run and run.status == "running", run
    assert job.outputs()[0][0] == f"{run.name}: starting…"
    return job, run


def test_on_a_shared_server_only_the_owner_who_started_a_training_can_stop_it(tmp_path, colour_folder):
    """While one owner trains, another is told the trainer is busy and cannot stop it; the first can."""
    logins = [("ann", "pw-ann"), ("bob", "pw-bob")]
    with serve(tmp_path / "proj", shared=True, auth=logins) as srv:
        me = Client(srv.url, verbose=False, download_files=False, auth=logins[0])
        other = Client(srv.url, verbose=False, download_files=False, auth=logins[1])
        import_files(srv.project, [colour_folder])
        job, run = _start_long_training(me, srv)

        assert "The trainer is busy" in _error(lambda: other.predict(size=64, api_name="/train"))
        assert "The trainer is busy" in _error(lambda: other.predict(size=64, api_name="/lr_find"))
        msg = other.predict(api_name="/stop")
        assert "The trainer is busy" in msg and "Only the person who started it" in msg
        assert runs.get_run(srv.project, run.id).status == "running"

        assert me.predict(api_name="/stop") == f"Stopping {run.name} after the current batch…"
        status, *_ = job.result(timeout=120)
        run = runs.get_run(srv.project, run.id)
        assert run.status == "stopped" and status.startswith(f"{run.name} stopped"), (status, run)
        assert me.predict(api_name="/stop") == "Nothing is training."


def test_on_a_computer_of_ones_own_any_page_may_stop_the_training(tmp_path, colour_folder):
    """Not shared, no login: one person, whatever page or program they use."""
    with serve(tmp_path / "proj") as srv:
        me, later = _client(srv.url), _client(srv.url)
        import_files(srv.project, [colour_folder])
        job, run = _start_long_training(me, srv)
        assert later.predict(api_name="/stop") == f"Stopping {run.name} after the current batch…"
        status, *_ = job.result(timeout=120)
        assert runs.get_run(srv.project, run.id).status == "stopped" and status.startswith(f"{run.name} stopped")


def test_with_a_login_the_same_user_may_stop_from_another_session(tmp_path, colour_folder):
    with serve(tmp_path / "proj", auth=[("ann", "pw-ann"), ("bob", "pw-bob")]) as srv:
        ann = Client(srv.url, verbose=False, download_files=False, auth=("ann", "pw-ann"))
        ann_again = Client(srv.url, verbose=False, download_files=False, auth=("ann", "pw-ann"))
        bob = Client(srv.url, verbose=False, download_files=False, auth=("bob", "pw-bob"))
        import_files(srv.project, [colour_folder])
        job, run = _start_long_training(ann, srv)
        assert "Only the person who started it" in bob.predict(api_name="/stop")
        assert ann_again.predict(api_name="/stop") == f"Stopping {run.name} after the current batch…"
        status, *_ = job.result(timeout=120)
        assert runs.get_run(srv.project, run.id).status == "stopped"


# --- Review -------------------------------------------------------------------------------
@pytest.fixture
def trained_server(trained_project):
    with serve(trained_project.root) as srv:
        yield srv


#: The outputs of every Review endpoint, in order (States are not part of the API).
REVIEW_OUTPUTS = ["note", "selected", "gallery", "details", "filter", "move_to", "status", "matrix", "cell_note",
                  "group", "group_gallery", "group_ids", "group_choice", "group_note"]


def _review(c, *args, api_name="/review") -> dict:
    """A review endpoint's answer, by name."""
    return dict(zip(REVIEW_OUTPUTS, c.predict(*args, api_name=api_name)))


def test_review_ranks_and_undoes(trained_server):
    srv, c = trained_server, _client(trained_server.url)
    project = srv.project
    out = _review(c, ALL, "", "")
    run = runs.active_run(project)
    assert out["note"].startswith(f"Ranked with {run.name}: ") and not out["selected"] and out["status"] == ""
    gallery = out["gallery"]
    expected = review.queue(project, top=48).rows
    by_sha = {it.sha256: it.id for it in project.items()}
    shown = [by_sha[_thumb_sha(g)] for g in gallery]
    assert shown == [r.item for r in expected] and len(shown) == 32
    assert [r.score for r in expected] == sorted((r.score for r in expected), reverse=True)
    # A class is claimed only where the evidence disputes the label; weak evidence reads "unsure".
    assert all(("→" in g["caption"]) == (r.predicted != r.label and r.flagged) for g, r in zip(gallery, expected))
    assert all(("unsure" in g["caption"]) == (r.predicted != r.label and not r.flagged)
               for g, r in zip(gallery, expected) if r.reason == "label")
    thumb = httpx.get(gallery[0]["image"]["url"])
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"  # the browser can load it
    matrix = _table(out["matrix"])
    assert sum(sum(int(x) for x in row[1:]) for row in matrix) == 32  # every picture, not only validation

    # Delete the most suspicious picture, then bring it back byte for byte.
    first = project.item(shown[0])
    path = project.path_of(first)
    before = path.read_bytes()
    out = _review(c, first.id, ALL, "", "", api_name="/delete")
    assert out["status"] == "Deleted 1 image. Undo brings it back."
    assert not path.exists() and project.item(first.id).status == "deleted"
    assert first.id not in {by_sha[_thumb_sha(g)] for g in out["gallery"]}

    out = _review(c, ALL, "", "", api_name="/undo")
    assert out["status"] == "Undone: deleted 1 image."
    assert path.read_bytes() == before and project.item(first.id).status == "active"
    assert first.id in {by_sha[_thumb_sha(g)] for g in out["gallery"]}

    assert _review(c, ALL, "", "", api_name="/redo")["status"] == "Redone: deleted 1 image." and not path.exists()
    c.predict(ALL, "", "", api_name="/undo")
    assert path.read_bytes() == before

    # Several at once: one action, one undo.
    three = shown[1:4]
    olds = {i: project.path_of(project.item(i)).read_bytes() for i in three}
    out = _review(c, ",".join(three), ALL, "", "", api_name="/delete")
    assert out["status"] == "Deleted 3 images. Undo brings them back."
    assert all(project.item(i).status == "deleted" for i in three)
    _review(c, ALL, "", "", api_name="/undo")
    assert all(project.path_of(project.item(i)).read_bytes() == olds[i] for i in three)

    # Move it to the other class, then undo.
    other = next(label for label in project.labels() if label != first.label)
    assert _review(c, first.id, other, ALL, "", "", api_name="/relabel")["status"] == f"Moved 1 image to '{other}'."
    moved = project.item(first.id)
    assert moved.label == other and project.path_of(moved).read_bytes() == before
    c.predict(ALL, "", "", api_name="/undo")
    assert project.item(first.id).label == first.label and path.read_bytes() == before

    # Keep: the picture is not shown again.
    out = _review(c, first.id, ALL, "", "", api_name="/keep")
    assert out["status"] == "Kept 1 image; it will not be shown again."
    assert first.id not in {by_sha[_thumb_sha(g)] for g in out["gallery"]}
    assert first.id in project.kept()

    # One class only.
    gallery = _review(c, other, "", "")["gallery"]
    assert {project.item(by_sha[_thumb_sha(g)]).label for g in gallery} == {other}

    # No selection, or an id that is not an item: plain messages, nothing changes.
    assert "Click a picture first" in _error(lambda: c.predict("", ALL, "", "", api_name="/delete"))
    assert "not an item" in _error(lambda: c.predict("../../project.db", ALL, "", "", api_name="/delete"))
    assert len(project.items()) == 32


def test_review_moves_pictures_to_the_class_the_model_sees_and_opens_confusion_cells(tmp_path, colour_folder):
    # Two reds filed as blue: the model (and their neighbours) say red.
    for i in range(2):
        imagegen.noisy(imagegen.COLOURS["red"], seed=700 + i).save(colour_folder / "blue" / f"wrong{i}.png")
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        c.predict(str(colour_folder), api_name="/import_folder")
        project = srv.project
        wrong = [it.id for it in project.items() if Path(it.source).name.startswith("wrong")]
        train(project, TrainConfig(size=64, epochs=2, pretrained=False))

        out = _review(c, ALL, "", "blue → red")  # the cell: filed as blue, looks red
        by_sha = {it.sha256: it.id for it in project.items()}
        cell = [by_sha[_thumb_sha(g)] for g in out["gallery"]]
        assert set(wrong) <= set(cell) and "blue → red" in out["cell_note"]
        assert all(project.item(i).label == "blue" for i in cell)

        out = _review(c, ",".join(wrong), ALL, "", "", api_name="/relabel_to_prediction")
        assert out["status"] == "Moved 2 images to 'red'."
        assert all(project.item(i).label == "red" for i in wrong)
        _review(c, ALL, "", "", api_name="/undo")
        assert all(project.item(i).label == "blue" for i in wrong)

        # Filter by reason: the label queue holds every picture, a reason nobody has shows nothing.
        assert len(_review(c, ALL, "label", "")["gallery"]) == len(project.items())
        assert _review(c, ALL, "duplicate", "")["gallery"] == []


def test_retrain_from_review_updates_the_queue(tmp_path, colour_folder):
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        c.predict(str(colour_folder), api_name="/import_folder")
        first = train(srv.project, TrainConfig(size=64, epochs=1, pretrained=False))
        status = _review(c, ALL, "", "", api_name="/retrain")["status"]
        latest = runs.list_runs(srv.project)[0]
        assert latest.id != first.run and latest.status == "finished", latest
        names = runs.run_names(runs.list_runs(srv.project))
        assert status.startswith(f"Retrained: {names[latest.id]}, ") and status.endswith("The queue is up to date.")
        # The new run is used only if it did better than the run in use on the same held-out pictures.
        chosen = run_choice.in_use(srv.project)
        assert {chosen.run.id, chosen.other.id} == {latest.id, first.run} and runs.active_run(srv.project) == chosen.run
        assert ("Review and Classify use it now" in status) == (chosen.run.id == latest.id), status
        assert latest.config["size"] == 64 and latest.config["pretrained"] is False  # the settings of the run in use


def test_review_groups_copies_side_by_side_and_keeps_one(tmp_path):
    from PIL import ImageDraw, ImageOps

    src = tmp_path / "pictures"
    for d in ("beach", "other"):
        (src / d).mkdir(parents=True)
    scene = imagegen.scene(11)
    w, h = scene.size
    scene.save(src / "beach" / "beach.jpg", quality=92)
    scene.crop((20, 10, w - 8, h - 14)).save(src / "beach" / "beach cropped.jpg", quality=70)
    captioned = scene.copy()
    ImageDraw.Draw(captioned).text((w // 2, h - 18), "© pics.com", fill=(255, 255, 255), anchor="mm", font_size=16)
    captioned.save(src / "other" / "beach captioned.jpg", quality=80)
    ImageOps.mirror(scene).save(src / "beach" / "beach mirrored.jpg", quality=85)
    for i in range(4):
        imagegen.scene(300 + i).save(src / "other" / f"scene {i}.jpg", quality=90)
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        c.predict(str(src), api_name="/import_folder")
        project = srv.project
        by_name = {Path(it.source).name: it for it in project.items()}
        copies = {"beach.jpg", "beach cropped.jpg", "beach captioned.jpg"}

        out = _review(c, ALL, "", "")
        ids = out["group_ids"].split(",")
        assert {project.item(i).source.rsplit("/", 1)[-1] for i in ids} == copies
        assert out["group_choice"] == ids[0] and "3 pictures" in out["group_note"]
        captions = [g["caption"] for g in out["group_gallery"]]
        assert captions[0].startswith("✓ keep · ") and all(".jpg" in cap for cap in captions)
        assert not any(i in cap for i in ids for cap in captions)  # names, never item ids
        assert all(any(n in g["caption"] for n in copies | {"beach mirrored.jpg"}) or "scene" in g["caption"]
                   for g in out["gallery"])

        # Keep the cropped one: the other two go to the trash in one step, and come back with one undo.
        keep = by_name["beach cropped.jpg"].id
        before = {i: project.path_of(project.item(i)).read_bytes() for i in ids}
        out = _review(c, ",".join(ids), keep, ALL, "", "", api_name="/keep_one")
        assert out["status"] == ("Kept “beach cropped.jpg” and moved 2 copies of it to the trash. "
                                 "Undo brings them back.")
        assert [i for i in ids if project.item(i).status == "active"] == [keep]
        assert out["group_ids"] == ""  # no group left (the mirrored copy is only in the loose view)
        out = _review(c, ALL, "", "", api_name="/undo")
        assert all(project.path_of(project.item(i)).read_bytes() == b for i, b in before.items())

        # Loose: the mirrored copy joins the group.
        out = _review(c, ALL, "", "", "loose", api_name="/review")
        assert len(out["group_ids"].split(",")) == 4 and any("mirrored" in g["caption"] for g in out["group_gallery"])
        # Keeping a picture outside the group is refused, and nothing changes.
        assert "Choose the picture to keep" in _error(
            lambda: c.predict(",".join(ids), by_name["scene 0.jpg"].id, ALL, "", "", api_name="/keep_one"))
        assert all(project.item(i).status == "active" for i in ids)


def test_review_without_a_model(tmp_path):
    with serve(tmp_path / "empty") as srv:
        note, _, gallery, *_ = _client(srv.url).predict(ALL, "", "", api_name="/review")
        assert gallery == [] and "train" in note.lower()


def test_review_of_a_large_project_stops_and_keeps_what_it_measured(tmp_path, monkeypatch):
    """Stop on the Review tab ends the queue between two pictures; the next look goes on from there."""
    import time

    from tl_app import dupes
    from tl_app.ui import review_tab

    folder = imagegen.class_folder(tmp_path / "pics", per_class=40)
    with serve(tmp_path / "big") as srv:
        import_files(srv.project, [folder])
        monkeypatch.setattr(review_tab, "LARGE", 10)  # the Stop shows from this many pictures
        seen, real = [], dupes.fingerprint_stored

        def slow(src):  # a picture every 20 ms: the queue runs long enough to be stopped
            seen.append(src)
            time.sleep(0.02)
            return real(src)

        monkeypatch.setattr(dupes, "fingerprint_stored", slow)
        c = _client(srv.url)
        job = c.submit(ALL, "", "", api_name="/review")
        wait_until(lambda: len(seen) >= 10, timeout=60)
        asked = time.monotonic()
        assert "Stopping" in c.predict(api_name="/stop_review")
        note = job.result(timeout=60)[0]
        assert time.monotonic() - asked < 5
        assert "Review stopped" in note and "kept" in note
        measured = len(seen)
        assert measured < 80

        # The next look measures only the pictures not measured before, and shows the queue.
        seen.clear()
        note = c.predict(ALL, "", "", api_name="/review")[0]
        assert "stopped" not in note.lower() and "Train a model" in note
        assert len(seen) == 80 - measured
        # Nothing runs: Stop says so.
        assert c.predict(api_name="/stop_review") == "Nothing is being reviewed."


# --- Classify -----------------------------------------------------------------------------
def test_classify(trained_server, tmp_path):
    c = _client(trained_server.url)
    red = tmp_path / "a red thing.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=99).save(red)
    blue = tmp_path / "blue.jpg"
    imagegen.noisy(imagegen.COLOURS["blue"], seed=98).save(blue, format="JPEG")

    note, label, gallery, errors = c.predict([handle_file(red), handle_file(blue)], api_name="/classify")
    run = runs.active_run(trained_server.project)
    assert note.startswith(f"Using {run.name}, ") and run.id not in note and errors == ""
    # The Prediction box says which picture it shows (the first), and how to see the other.
    assert label["label"] == "Prediction for a red thing.png (1 of 2; click another picture below to see its prediction)"
    confs = {d["label"]: d["confidence"] for d in label["value"]["confidences"]}
    assert set(confs) == {"red", "blue"} and math.isclose(sum(confs.values()), 1.0, abs_tol=1e-3)
    assert label["value"]["label"] == max(confs, key=confs.get)
    assert [g["caption"].split(":")[0] for g in gallery] == ["a red thing.png", "blue.jpg"]
    assert all("%" in g["caption"] for g in gallery)

    # A text file renamed .jpg is refused with a reason, next to a picture that is classified.
    fake = _fake_jpg(tmp_path, "holiday.jpg")
    note, label, gallery, errors = c.predict([handle_file(fake), handle_file(red)], api_name="/classify")
    assert "`holiday.jpg`:" in errors and "text" in errors
    assert label["label"] == "Prediction for a red thing.png" and len(gallery) == 1

    note, label, gallery, errors = c.predict([handle_file(fake)], api_name="/classify")
    assert not _value(label) and gallery == [] and "holiday.jpg" in errors


def test_one_picture_over_plain_http_answers_as_predict_json(trained_server, tmp_path):
    """What a program (or curl) does: upload a file, POST /gradio_api/run/predict, read the JSON."""
    from tl_app.predict import predict_files

    red = tmp_path / "a red thing.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=95).save(red)
    [got] = predict_http(trained_server.url, red)["data"]
    [want] = predict_files(trained_server.project, [red])
    assert got["file"] == "a red thing.png" and got["label"] == want.label and got["label"] in ("red", "blue")
    assert math.isclose(got["confidence"], want.confidence, abs_tol=1e-5)
    assert set(got["probs"]) == {"red", "blue"} and "unknown" in got and "unknown_score" in got
    # Not a picture: its answer says why, by its name.
    [bad] = predict_http(trained_server.url, _fake_jpg(tmp_path, "holiday.jpg"))["data"]
    assert bad["file"] == "holiday.jpg" and bad["label"] is None and "text" in bad["error"]


def test_one_picture_as_the_body_of_one_request(trained_server, tmp_path):
    """The endpoint for programs: curl --data-binary @file /api/predict?name=... answers as predict --json,
    in one request; what it cannot take is said in words with a status a program can act on."""
    from tl_app.predict import predict_files

    project, url = trained_server.project, trained_server.url
    red = tmp_path / "a red thing.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=95).save(red)
    n_items = len(project.items())
    r = predict_api(url, red)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    got = r.json()
    [want] = predict_files(project, [red])
    assert got == {**want.to_dict(), "file": "a red thing.png"} and got["label"] in ("red", "blue")
    assert set(got) == {"file", "label", "confidence", "probs", "unknown", "unknown_score"}
    # Not a picture: 422, its name and why.
    r = predict_api(url, _fake_jpg(tmp_path, "holiday.jpg"))
    assert r.status_code == 422 and r.json()["file"] == "holiday.jpg" and "text" in r.json()["error"]
    assert r.json()["label"] is None
    # Nothing sent, the wrong method, too large: each says what to do.
    r = httpx.post(url + "api/predict")
    assert r.status_code == 400 and "--data-binary" in r.json()["error"]
    r = httpx.get(url + "api/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and "POST" in r.json()["error"]
    r = httpx.post(url + "api/predict", content=b"\xff" * (50 * 1024 * 1024 + 1))
    assert r.status_code == 413 and "larger than 50 MB" in r.json()["error"]
    # Without a name the answer calls it "picture"; the project is as it was.
    assert predict_api(url, red).json()["file"] == "a red thing.png"
    assert httpx.post(url + "api/predict", content=red.read_bytes()).json()["file"] == "picture"
    assert len(project.items()) == n_items
    # The Classify tab's "About this model" says how.
    config = httpx.get(url + "config").json()
    assert any("curl --data-binary @cat.jpg" in str(c.get("props", {}).get("value", "")) and "/api/predict" in
               str(c["props"]["value"]) for c in config["components"])


def test_the_endpoint_for_programs_without_a_model_says_to_train(tmp_path):
    red = tmp_path / "red.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=3).save(red)
    with serve(tmp_path / "p") as srv:
        r = predict_api(srv.url, red)
        assert r.status_code == 409 and "No trained model yet" in r.json()["error"]


def test_plain_http_answers_with_the_run_and_names_in_use_now(trained_server, tmp_path):
    """The served app keeps models loaded between calls, yet a class renamed (or the rename undone), a
    new run trained and put in use, or the earlier run chosen again, all by another program while it
    runs, shows in the very next answer of the same client."""
    import httpx

    from tl_app.predict import predict_files

    project, url = trained_server.project, trained_server.url
    red = tmp_path / "red.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=91).save(red)
    first_run = runs.active_run(project).id
    with httpx.Client(timeout=60) as http:  # one client, one session: the warm path a program takes
        before = predict_http(url, red, client=http)["data"][0]
        assert set(before["probs"]) == {"red", "blue"}

        project.rename_label("red", "crimson")  # as the CLI would, in another process
        renamed = predict_http(url, red, client=http)["data"][0]
        assert set(renamed["probs"]) == {"crimson", "blue"}
        assert renamed["probs"]["crimson"] == before["probs"]["red"] and renamed["probs"]["blue"] == before["probs"]["blue"]
        project.undo()
        assert predict_http(url, red, client=http)["data"][0]["probs"] == before["probs"]

        rep = train(project, TrainConfig(size=32, epochs=1, pretrained=False))  # a new run, then put in use
        assert rep.status == "finished" and rep.run != first_run
        runs.set_active_run(project, rep.run)
        [want_new] = predict_files(project, [red], run_id=rep.run)
        newer = predict_http(url, red, client=http)["data"][0]
        assert newer["probs"] == want_new.probs and newer["probs"] != before["probs"]

        runs.set_active_run(project, first_run)  # the earlier run chosen again
        assert predict_http(url, red, client=http)["data"][0]["probs"] == before["probs"]


def test_classify_says_none_of_these(open_set_project, tmp_path):
    """A picture of a kind the model never saw (grey; it knows red and blue) is "not one of" its classes."""
    with serve(open_set_project.root) as srv:
        _none_of_these(_client(srv.url), tmp_path)


def _none_of_these(c, tmp_path):
    grey, red = tmp_path / "a grey thing.png", tmp_path / "red.png"
    imagegen.noisy((128, 128, 128), seed=97).save(grey)
    imagegen.noisy(imagegen.COLOURS["red"], seed=96).save(red)
    note, label, gallery, errors = c.predict([handle_file(grey), handle_file(red)], api_name="/classify")
    assert label["label"].startswith("Prediction for a grey thing.png (1 of 2;")
    assert re.fullmatch(r"Not one of: blue, red \(nearest: (red|blue) \d+%\)", label["value"]["label"])
    assert not label["value"].get("confidences")
    assert re.fullmatch(r"a grey thing\.png: not one of these \(nearest: (red|blue) \d+%\)", gallery[0]["caption"])
    assert re.fullmatch(r"red\.png: red \d+%", gallery[1]["caption"])


def test_classify_without_a_model(tmp_path):
    red = tmp_path / "red.png"
    imagegen.noisy(imagegen.COLOURS["red"]).save(red)
    with serve(tmp_path / "empty") as srv:
        msg = _error(lambda: _client(srv.url).predict([handle_file(red)], api_name="/classify"))
        assert "train" in msg.lower() and "went wrong" not in msg
