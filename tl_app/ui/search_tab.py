"""Tab 1: get pictures into the project (search the web, upload files or a zip, import a folder), browse
them, move or delete some, and rename, merge or delete classes.

Wiring only: :func:`tl_app.importer.plan_import` says what a drop will do before
:func:`tl_app.importer.import_files` does it; every change to pictures or classes
is one undoable action of :class:`tl_app.project.Project`.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ..errors import InputError, InvalidLabel, ItemNotFound, NothingToUndo
from ..importer import ImportReport, import_files, plan_import
from ..project import Item
from .adapters import UIContext, for_anyone, owner_only, upload_paths
from .progress import gr_progress, progress_slot, session_stop, stop_session
from .web_search import create_web_search, wire_web_search

BROWSE_LIMIT = 60
ADD_LABEL = "Add these pictures"
TICK, BOX = "☑ ", "☐ "
#: For ``refreshed(target=...)``: the upload class follows the class shown, or stays as it is.
FOLLOW, SAME = object(), object()


def classes_table(ctx: UIContext) -> pd.DataFrame:
    counts = ctx.project.label_counts()
    return pd.DataFrame({"Class": list(counts), "Images": list(counts.values())})


def report_markdown(rep: ImportReport) -> str:
    lines = [f"**{rep.summary()}.**"]
    if rep.elsewhere:
        lines += ["", rep.elsewhere_note() + " Move them with the button below, or leave them where they are."]
    if rep.rejected:
        lines.append("")
        lines.append("Refused files:")
        for r in rep.rejected[:50]:
            name = r.file.split("!", 1)[1] if "!" in r.file else Path(r.file).name
            lines.append(f"- `{name}`: {r.reason}")
        if len(rep.rejected) > 50:
            lines.append(f"- … and {len(rep.rejected) - 50} more")
    return "\n".join(lines)


# --- browsing and selecting pictures ------------------------------------------------------------
def shown_items(ctx: UIContext, label: str | None, limit: int = BROWSE_LIMIT) -> list[dict]:
    """The pictures the gallery shows for a class (the ``limit`` newest, newest first): id, thumbnail and a
    name a person knows. Only those are read from the project, so a class of 50,000 opens at once."""
    if not label:
        return []
    items: list[Item] = ctx.project.items(label=label, newest=limit)
    return [{"id": it.id, "thumb": str(ctx.project.thumbnail(it)), "name": it.display_name} for it in items]


def more_button(ctx: UIContext, label: str | None, shown: list[dict]):
    """The gallery's "Show more" button: there while the class holds pictures the gallery does not show."""
    total = ctx.project.label_counts().get(label, 0) if label else 0
    left = total - len(shown)
    return gr.Button(f"Show {min(BROWSE_LIMIT, left)} more (of {left} not shown)" if left > 0 else "Show more",
                     visible=left > 0)


def gallery_value(shown: list[dict], selected: set[str]) -> list[tuple[str, str]]:
    return [(s["thumb"], (TICK if s["id"] in selected else BOX) + s["name"]) for s in shown]


def selection_note(ctx: UIContext, label: str | None, shown: list[dict], selected: set[str]) -> str:
    if not shown:
        return "This class has no pictures yet." if label else ""
    total = ctx.project.label_counts().get(label, len(shown)) if label else len(shown)
    more = f" (the {len(shown)} newest of {total})" if total > len(shown) else ""
    if not selected:
        return f"Click pictures to select them{more}, then move them to another class or delete them."
    return f"**{len(selected)} selected.** Click a picture again to unselect it."


def parse_ids(text: str | None) -> list[str]:
    """Item ids from the hidden selection field ("id1,id2"); the project checks each one."""
    return [s for s in (text or "").replace(" ", "").split(",") if s]


# --- what a class change will do ----------------------------------------------------------------
def class_change_note(ctx: UIContext, picked: list[str] | None, name: str | None) -> str:
    """What Rename, Merge and Delete would do with the chosen classes and the typed name, before any click."""
    counts = ctx.project.label_counts()
    picked = [p for p in (picked or []) if p in counts]
    name = (name or "").strip()
    if not picked:
        return "Choose one or more classes, then rename, merge or delete them. Every change can be undone."
    n = sum(counts[p] for p in picked)
    quoted = " and ".join(", ".join(f"'{p}'" for p in picked).rsplit(", ", 1))
    pics = f"{n} picture{'s' if n != 1 else ''}"
    lines = []
    existing = ctx.project.find_label(name) if name else None
    if name:
        try:
            from ..project import validate_label

            validate_label(name)
        except InvalidLabel as e:
            return f"{e}"
    if len(picked) == 1:
        src = picked[0]
        if not name:
            lines.append(f"**Rename**: type the new name for '{src}' above.")
        elif existing and existing != src:
            lines.append(f"**Rename** = merge: '{existing}' is already a class, so the {pics} of '{src}' go into "
                         f"'{existing}' and '{src}' is removed.")
        elif existing == src and name == src:
            lines.append(f"**Rename**: '{src}' is already called that.")
        else:
            lines.append(f"**Rename**: '{src}' becomes '{name}' ({pics} follow).")
    else:
        lines.append("**Rename** works on one class at a time.")
        if not name:
            lines.append(f"**Merge**: type the class that {quoted} become (one of them, another class or a new name).")
        else:
            into = existing or name
            moving = sum(counts[p] for p in picked if p != into)
            gone = [p for p in picked if p != into]
            lines.append(f"**Merge**: {moving} picture{'s' if moving != 1 else ''} of "
                         f"{' and '.join(', '.join(repr(g) for g in gone).rsplit(', ', 1))} go into '{into}'"
                         f"{'' if existing else ' (a new class)'}; "
                         f"{'it is' if len(gone) == 1 else 'they are'} then removed.")
    lines.append(f"**Delete**: {quoted} and {'its' if len(picked) == 1 else 'their'} {pics} go to the project's "
                 "trash.")
    return "  \n".join(lines)


FOLDER_LABEL = "Import folder"


def _button_text(plan, verb: str, default: str) -> str:
    """"Add 12 pictures to 'cat'" / "Import 40 pictures to 3 classes": what the button will do."""
    n, k = plan.pictures - plan.unlabelled, len(plan.classes)
    if k > 1:
        return f"{verb} {n} picture{'s' if n != 1 else ''} to {k} classes"
    if k == 1:
        return f"{verb} {n} picture{'s' if n != 1 else ''} to '{next(iter(plan.classes))}'"
    return default


def create_search_tab(ctx: UIContext) -> dict:
    """Widgets and events of the Search & download tab."""
    c: dict = {}
    gr.Markdown("Name your classes and add pictures of each one, from the web or from your own files. Every "
                "picture is checked: broken files, non-images, placeholders and duplicates are refused with a "
                "reason, and nothing you add is changed on your disk.")
    with gr.Row():
        with gr.Column(scale=1):
            c["classes"] = gr.Dataframe(value=classes_table(ctx), label="Your classes", interactive=False,
                                        elem_id="classes-table")
            with gr.Row():
                c["new_class"] = gr.Textbox(label="New class", placeholder="e.g. cat", scale=3, elem_id="new-class")
                c["add_class"] = gr.Button("Add class", scale=1, elem_id="add-class")
        with gr.Column(scale=3):
            c.update(create_web_search(ctx))
    gr.Markdown("### Add your own pictures", elem_id="own-heading")
    with gr.Row():
        with gr.Column(scale=2):
            c["target"] = gr.Dropdown(choices=ctx.project.labels(), value=None, label="Add pictures to class",
                                      allow_custom_value=True, elem_id="target-class",
                                      info="Choose a class or type a new name. A zip file with a folder per class "
                                           "fills those classes instead.")
            c["files"] = gr.File(file_count="multiple", label="Drop pictures or a zip file here",
                                 file_types=["image", ".zip"], elem_id="upload-files")
            c["plan"] = gr.Markdown(elem_id="import-plan")
            c["into_target"] = gr.Checkbox(False, visible=False, elem_id="import-into-target",
                                           label="Put every picture into the chosen class instead (the zip's "
                                                 "folders do not become classes)")
            with gr.Row():
                c["add_files"] = gr.Button(ADD_LABEL, variant="primary", elem_id="add-files", scale=3)
                # There while an import runs: it ends at the next picture, and what is in stays (undoable).
                c["import_stop"] = gr.Button("Stop import", variant="stop", visible=False, elem_id="import-stop",
                                             scale=1, min_width=120)
            # An empty line under the buttons while an import runs: Gradio draws its progress bar there.
            c["import_progress"], c["import_bar"] = progress_slot("import-progress")
        with gr.Column(scale=1):
            if not ctx.shared:
                with gr.Accordion("Import a folder from this computer", open=False):
                    c["folder"] = gr.Textbox(label="Folder", placeholder="/home/me/pictures/animals", elem_id="import-folder-path",
                                             info="A folder with a sub-folder per class (the sub-folder names become the classes).")
                    c["folder_plan"] = gr.Markdown(elem_id="folder-plan")
                    with gr.Row():
                        c["import_folder"] = gr.Button(FOLDER_LABEL, elem_id="import-folder", scale=3)
                        c["folder_stop"] = gr.Button("Stop import", variant="stop", visible=False,
                                                     elem_id="import-folder-stop", scale=1, min_width=120)
                    c["folder_progress"], c["folder_bar"] = progress_slot("import-folder-progress")
            c["result"] = gr.Markdown(elem_id="import-result")
            c["elsewhere"] = gr.State({})
            c["move_elsewhere"] = gr.Button("Move them", visible=False, elem_id="import-move-elsewhere")

    gr.Markdown("### Your pictures and classes", elem_id="pictures-heading")
    with gr.Row():
        # allow_custom_value: an API caller's session never sees the refreshed choices (see review_tab).
        c["browse_class"] = gr.Dropdown(choices=ctx.project.labels(), label="Show class", allow_custom_value=True,
                                        elem_id="browse-class")
    # Clicking a picture selects it (☑); the chosen ids travel in a hidden field so that the API,
    # which has no gallery to click, can name them too. The project checks every id it is given.
    c["gallery"] = gr.Gallery(label="Pictures (newest first; click to select)", columns=8, height="auto",
                              allow_preview=False, object_fit="cover", elem_id="browse-gallery")
    c["browse_more"] = gr.Button("Show more", visible=False, size="sm", elem_id="browse-more")
    c["browse_shown"] = gr.State([])
    c["browse_selected"] = gr.Textbox(visible=False, label="Selected pictures", elem_id="browse-selected")
    c["browse_note"] = gr.Markdown(elem_id="browse-selection")
    with gr.Row():
        c["move_to"] = gr.Dropdown(choices=ctx.project.labels(), value=None, label="Move selected pictures to class",
                                   allow_custom_value=True, elem_id="move-to", scale=2, min_width=200)
        c["move_selected"] = gr.Button("Move selected", elem_id="move-selected", scale=1, min_width=120)
        c["delete_selected"] = gr.Button("Delete selected", variant="stop", elem_id="delete-selected", scale=1,
                                         min_width=120)
        c["clear_selection"] = gr.Button("Unselect all", elem_id="browse-clear", scale=1, min_width=120)
    with gr.Accordion("Rename, merge or delete classes", open=False, elem_id="manage-classes"):
        with gr.Row():
            c["manage_pick"] = gr.Dropdown(choices=ctx.project.labels(), value=[], multiselect=True,
                                           label="Classes to change", elem_id="manage-pick", scale=2, min_width=200)
            c["manage_name"] = gr.Textbox(label="New name (for rename or merge)", placeholder="e.g. kitten",
                                          elem_id="manage-name", scale=2, min_width=200)
        c["manage_note"] = gr.Markdown(class_change_note(ctx, [], ""), elem_id="manage-note")
        with gr.Row():
            c["rename_class"] = gr.Button("Rename", elem_id="class-rename", min_width=100)
            c["merge_classes"] = gr.Button("Merge", elem_id="class-merge", min_width=100)
            c["delete_classes"] = gr.Button("Delete class", variant="stop", elem_id="class-delete", min_width=100)
    with gr.Row():
        c["undo"] = gr.Button("Undo", elem_id="pictures-undo", min_width=100)
        c["redo"] = gr.Button("Redo", elem_id="pictures-redo", min_width=100)
    c["status"] = gr.Markdown(elem_id="pictures-status")

    view = [c["classes"], c["target"], c["browse_class"], c["gallery"], c["browse_shown"], c["browse_selected"],
            c["browse_note"], c["manage_pick"], c["move_to"], c["browse_more"]]
    c["view_outs"] = view
    def refreshed(label=None, *, target=FOLLOW, pick=None):
        """Every view of the classes and the gallery, showing class ``label`` (selection cleared).

        ``target`` is the upload area's class: by default ``label`` (it follows the class shown),
        ``SAME`` to leave it as the visitor set it. ``pick`` is what the class-change list holds.
        """
        labels = ctx.project.labels()
        label = label if label in labels else None
        shown = shown_items(ctx, label)
        tgt = (gr.Dropdown(choices=labels) if target is SAME
               else gr.Dropdown(choices=labels, value=label if target is FOLLOW else target))
        return (classes_table(ctx), tgt, gr.Dropdown(choices=labels, value=label),
                gallery_value(shown, set()), shown, "", selection_note(ctx, label, shown, set()),
                gr.Dropdown(choices=labels, value=[p for p in (pick or []) if p in labels]),
                gr.Dropdown(choices=labels, value=None), more_button(ctx, label, shown))

    # --- classes and uploads ---
    @owner_only(ctx, "add classes")
    def add_class(name: str):
        label = ctx.project.add_label(name or "")
        return (*refreshed(label), "")

    c["add_class"].click(add_class, [c["new_class"]], [*view, c["new_class"]], api_name="add_class")
    c["new_class"].submit(add_class, [c["new_class"]], [*view, c["new_class"]], api_visibility="private")

    def _plan(files, target, into):
        paths, names = upload_paths(files)
        if not paths:
            return None
        label = (target or "").strip() or None
        if into and not label:
            raise InputError("Choose the class to put every picture into, or untick “Put every picture into "
                             "the chosen class”.")
        return plan_import(paths, label=label if into else None, loose_label=label, names=names,
                           project=ctx.project), paths, names, label

    @owner_only(ctx, "add pictures")
    def show_plan(files, target, into):
        """What the dropped files will become, said before anything is imported."""
        try:
            got = _plan(files, target, into)
        except (InvalidLabel, InputError) as e:
            return str(e), gr.skip(), gr.Button(ADD_LABEL)
        if got is None:
            return "", gr.Checkbox(visible=False, value=False), gr.Button(ADD_LABEL)
        plan = got[0]
        has_folders = any(s.folders for s in plan.sources) or (into and any(s.kind != "pictures"
                                                                             for s in plan.sources))
        return (plan.summary() or "Nothing to import.", gr.Checkbox(visible=bool(has_folders)),
                gr.Button(_button_text(plan, "Add", ADD_LABEL)))

    plan_outs = [c["plan"], c["into_target"], c["add_files"]]
    plan_ins = [c["files"], c["target"], c["into_target"]]
    c["files"].change(show_plan, plan_ins, plan_outs, api_name="plan_files", show_progress="hidden")
    c["target"].change(show_plan, plan_ins, plan_outs, api_visibility="private", show_progress="hidden")
    c["into_target"].change(show_plan, plan_ins, plan_outs, api_visibility="private", show_progress="hidden")

    def _elsewhere_outs(rep: ImportReport):
        n = len(rep.elsewhere)
        return (dict(rep.elsewhere),
                gr.Button(f"Move {'them' if n != 1 else 'it'} to the class{'es' if n != 1 else ''} this import gives",
                          visible=bool(n)))

    import_outs = [*view, c["result"], c["files"], c["elsewhere"], c["move_elsewhere"]]

    @owner_only(ctx, "add pictures")
    def add_files(label: str, files, into: bool = False, request: gr.Request = None, progress=gr.Progress()):
        got = _plan(files, label, into)
        if got is None:
            raise InputError("Drop some pictures (or a zip file) first.")
        plan, paths, names, label = got
        if plan.needs_label:
            n = plan.unlabelled
            raise InputError(f"Choose the class {'this picture belongs' if n == 1 else f'these {n} pictures belong'} "
                             "to (or type a new class name). A zip file with a folder per class needs none.")
        with session_stop(ctx, "import", request) as stop:
            # While it runs: the Stop button, and a line of its own for the progress bar.
            yield (*[gr.skip()] * len(import_outs), gr.Button(visible=True), gr.Column(visible=True))
            try:
                rep = import_files(ctx.project, paths, label=label if into else None, loose_label=label,
                                   names=names, progress=gr_progress(progress, "Importing", "files"), stop=stop)
            except Exception:  # said by the handler; the Stop button and the progress line go
                yield (*[gr.skip()] * len(import_outs), gr.Button(visible=False), gr.Column(visible=False))
                raise
        got_classes = [k for k in plan.classes if rep.labels.get(k)]
        shown = label if label and ctx.project.find_label(label) in got_classes else next(iter(got_classes), None)
        shown = ctx.project.find_label(shown) if shown else None
        yield (*refreshed(shown, target=ctx.project.find_label(label) if label else None), report_markdown(rep),
               None, *_elsewhere_outs(rep), gr.Button(visible=False), gr.Column(visible=False))

    c["add_files"].click(add_files, [c["target"], c["files"], c["into_target"]],
                         [*import_outs, c["import_stop"], c["import_progress"]], api_name="add_files",
                         show_progress_on=[c["import_bar"]])

    @owner_only(ctx, "stop imports")
    def stop_import(request: gr.Request = None):
        """Stop this window's running import at its next picture; what is in stays (one Undo takes it out)."""
        return ("**Stopping the import…** The pictures already in stay." if stop_session(ctx, "import", request)
                else "Nothing is importing.")

    # queue=False: a Stop must not wait behind the import it stops.
    c["import_stop"].click(stop_import, None, [c["result"]], api_name="stop_import", queue=False)

    @owner_only(ctx, "move pictures")
    def move_elsewhere(assign: dict, shown: str | None):
        if not assign:
            raise InputError("There is nothing to move: import the pictures first.")
        try:
            a = ctx.project.move(assign)
        except ItemNotFound as e:
            raise InputError(str(e)) from None
        to = next(iter(a.items), {}).get("to_label")
        return (*refreshed(to or shown, target=SAME), f"{a.summary.capitalize()}. Undo moves them back.", {},
                gr.Button(visible=False))

    c["move_elsewhere"].click(move_elsewhere, [c["elsewhere"], c["browse_class"]],
                              [*view, c["result"], c["elsewhere"], c["move_elsewhere"]], api_visibility="private")

    if "import_folder" in c:
        folder_outs = [*view, c["result"], c["elsewhere"], c["move_elsewhere"]]

        @owner_only(ctx, "import folders")
        def import_folder(folder: str, request: gr.Request = None, progress=gr.Progress()):
            if not folder or not folder.strip():
                raise InputError("Type the path of a folder on this computer.")
            p = Path(folder.strip()).expanduser()
            if not p.is_dir():
                raise InputError(f"{p} is not a folder on this computer.")
            with session_stop(ctx, "import", request) as stop:
                yield (*[gr.skip()] * len(folder_outs), gr.Button(visible=True), gr.Column(visible=True))
                try:
                    rep = import_files(ctx.project, [p], progress=gr_progress(progress, "Importing", "files"),
                                       stop=stop)
                except Exception:
                    yield (*[gr.skip()] * len(folder_outs), gr.Button(visible=False), gr.Column(visible=False))
                    raise
            first = next(iter(rep.labels), None)
            yield (*refreshed(first), report_markdown(rep), *_elsewhere_outs(rep), gr.Button(visible=False),
                   gr.Column(visible=False))

        folder_done = c["import_folder"].click(
            import_folder, [c["folder"]], [*folder_outs, c["folder_stop"], c["folder_progress"]],
            api_name="import_folder", show_progress_on=[c["folder_bar"]])

        @owner_only(ctx, "import folders", quiet=True)
        def plan_done():
            """The plan said before the import is done with: the result below says what became of it."""
            return "", gr.Button(FOLDER_LABEL)

        folder_done.success(plan_done, None, [c["folder_plan"], c["import_folder"]], api_visibility="private",
                            show_progress="hidden")
        c["folder_stop"].click(stop_import, None, [c["result"]], api_visibility="private", queue=False)

        @owner_only(ctx, "import folders", quiet=True)
        def show_folder_plan(folder: str):
            """What the typed folder will become (its classes and pictures), said before anything is imported."""
            p = Path((folder or "").strip()).expanduser()
            if not (folder or "").strip():
                return "", gr.Button(FOLDER_LABEL)
            if not p.is_dir():
                return f"{p} is not a folder on this computer.", gr.Button(FOLDER_LABEL)
            plan = plan_import([p], project=ctx.project)
            return plan.summary() or "No pictures in this folder.", gr.Button(_button_text(plan, "Import",
                                                                                          FOLDER_LABEL))

        c["folder"].blur(show_folder_plan, [c["folder"]], [c["folder_plan"], c["import_folder"]],
                         api_visibility="private", show_progress="hidden")

    # --- the gallery: browse, select, move, delete ---
    @owner_only(ctx, "see the project's pictures")
    def show_class(label):
        out = refreshed(label, target=SAME)
        return (*out[3:7], out[-1])

    browse_outs = [c["gallery"], c["browse_shown"], c["browse_selected"], c["browse_note"], c["browse_more"]]
    c["browse_class"].change(show_class, [c["browse_class"]], browse_outs, api_name="browse")

    @owner_only(ctx, "see the project's pictures")
    def show_more(label, shown: list[dict], selected: str):
        """The next page of the class's pictures below those shown (the selection stays)."""
        labels = ctx.project.labels()
        if label not in labels:
            return show_class(label)
        shown = shown_items(ctx, label, limit=len(shown or []) + BROWSE_LIMIT)
        chosen = set(parse_ids(selected)) & {s["id"] for s in shown}
        ordered = [s["id"] for s in shown if s["id"] in chosen]
        return (gallery_value(shown, chosen), shown, ",".join(ordered), selection_note(ctx, label, shown, chosen),
                more_button(ctx, label, shown))

    c["browse_more"].click(show_more, [c["browse_class"], c["browse_shown"], c["browse_selected"]], browse_outs,
                           api_name="browse_more")

    @owner_only(ctx, "select pictures")
    def toggle(label, shown: list[dict], selected: str, evt: gr.SelectData):
        chosen = set(parse_ids(selected)) & {s["id"] for s in shown}
        i = evt.index if isinstance(evt.index, int) else None
        if i is not None and 0 <= i < len(shown):
            chosen ^= {shown[i]["id"]}
        ordered = [s["id"] for s in shown if s["id"] in chosen]
        return ",".join(ordered), gallery_value(shown, chosen), selection_note(ctx, label, shown, chosen)

    sel_outs = [c["browse_selected"], c["gallery"], c["browse_note"]]
    # queue=False: a click answers at once (the handler reads nothing but its inputs and the class counts).
    c["gallery"].select(toggle, [c["browse_class"], c["browse_shown"], c["browse_selected"]], sel_outs,
                        api_visibility="private", show_progress="hidden", queue=False)

    @owner_only(ctx, "select pictures")
    def clear(label, shown: list[dict]):
        return "", gallery_value(shown, set()), selection_note(ctx, label, shown, set())

    c["clear_selection"].click(clear, [c["browse_class"], c["browse_shown"]], sel_outs, api_visibility="private",
                               show_progress="hidden", queue=False)

    def _selected(selected: str) -> list[str]:
        ids = parse_ids(selected)
        if not ids:
            raise InputError("Click the pictures you want first (they get a ☑).")
        return ids

    @owner_only(ctx, "move pictures")
    def move_selected(selected: str, to: str, shown: str | None):
        ids = _selected(selected)
        if not to or not str(to).strip():
            raise InputError("Choose the class to move the selected pictures to (or type a new class name).")
        try:
            a = ctx.project.move({i: to for i in ids})
        except ItemNotFound as e:
            raise InputError(str(e)) from None
        return (*refreshed(shown, target=SAME), f"{a.summary.capitalize()}. Undo moves them back.")

    act_outs = [*view, c["status"]]
    c["move_selected"].click(move_selected, [c["browse_selected"], c["move_to"], c["browse_class"]], act_outs,
                             api_name="move_pictures")

    @owner_only(ctx, "delete pictures")
    def delete_selected(selected: str, shown: str | None):
        ids = _selected(selected)
        try:
            a = ctx.project.delete(ids)
        except ItemNotFound as e:
            raise InputError(str(e)) from None
        n = len(a.items)
        return (*refreshed(shown, target=SAME),
                f"{a.summary.capitalize()} (to the project's trash). Undo brings {'them' if n != 1 else 'it'} back.")

    c["delete_selected"].click(delete_selected, [c["browse_selected"], c["browse_class"]], act_outs,
                               api_name="delete_pictures")

    # --- classes: rename, merge, delete; undo and redo ---
    @owner_only(ctx, "rename, merge or delete classes")
    def change_note(picked, name):
        return class_change_note(ctx, picked, name)

    c["manage_pick"].change(change_note,
                            [c["manage_pick"], c["manage_name"]], [c["manage_note"]], api_visibility="private",
                            show_progress="hidden", queue=False)
    c["manage_name"].change(change_note,
                            [c["manage_pick"], c["manage_name"]], [c["manage_note"]], api_visibility="private",
                            show_progress="hidden", queue=False)

    def _one(picked) -> str:
        picked = [p for p in (picked or []) if p]
        if len(picked) != 1:
            raise InputError("Choose one class to rename." if not picked else
                             "Rename works on one class at a time: to put several classes together, use Merge.")
        return picked[0]

    def _after_change(a, shown: str | None, pick: list[str]):
        """The views after a class change: keep showing the class, under its new name if it has one."""
        now = ctx.project.find_label(shown) if shown else None
        if now is None and shown:
            moved_to = {p.get("to_label") for p in a.items} - {None}
            now = next(iter(moved_to), None)
        return (*refreshed(now, target=SAME, pick=pick), a.summary[0].upper() + a.summary[1:] +
                ". Undo reverts it.", "")

    manage_outs = [*view, c["status"], c["manage_name"]]

    @owner_only(ctx, "rename classes")
    def rename_class(picked, name: str, shown: str | None):
        old = _one(picked)
        a = ctx.project.rename_label(old, name or "", merge=True)  # the note said so before the click
        new = ctx.project.find_label(name) or name
        return _after_change(a, new if shown and shown.casefold() == old.casefold() else shown, [new])

    c["rename_class"].click(rename_class, [c["manage_pick"], c["manage_name"], c["browse_class"]], manage_outs,
                            api_name="rename_class")

    @owner_only(ctx, "merge classes")
    def merge_classes(picked, name: str, shown: str | None):
        if not (name or "").strip():
            raise InputError("Type the name of the class the chosen classes become (one of them or a new name).")
        a = ctx.project.merge_labels(picked or [], name)
        into = ctx.project.find_label(name)
        return _after_change(a, into if shown in (picked or []) else shown, [into] if into else [])

    c["merge_classes"].click(merge_classes, [c["manage_pick"], c["manage_name"], c["browse_class"]], manage_outs,
                             api_name="merge_classes")

    @owner_only(ctx, "delete classes")
    def delete_classes(picked, shown: str | None):
        a = ctx.project.delete_labels(picked or [])
        back = "it" if len(a.labels.get("removed", [])) == 1 else "them"
        return (*refreshed(ctx.project.find_label(shown) if shown else None, target=SAME),
                f"{a.summary[0].upper()}{a.summary[1:]}. Undo brings {back} back.")

    c["delete_classes"].click(delete_classes, [c["manage_pick"], c["browse_class"]], act_outs,
                              api_name="delete_classes")

    def _step(step, verb: str, shown: str | None):
        try:
            a = step()
        except (NothingToUndo, ItemNotFound) as e:  # nothing to undo, or files gone: a message, not a fault
            raise InputError(str(e)) from None
        now = ctx.project.find_label(shown) if shown else None
        if now is None:
            names = [x["name"] for g in ("removed", "added") for x in a.labels.get(g, [])]
            names += [p.get("label") or p.get("from_label") for p in a.items]
            now = next((ctx.project.find_label(n) for n in names if n and ctx.project.find_label(n)), None)
        return (*refreshed(now, target=SAME), f"{verb}: {a.summary}.")

    @owner_only(ctx, "undo changes")
    def undo(shown: str | None):
        return _step(ctx.project.undo, "Undone", shown)

    @owner_only(ctx, "redo changes")
    def redo(shown: str | None):
        return _step(ctx.project.redo, "Redone", shown)

    c["undo"].click(undo, [c["browse_class"]], act_outs, api_name="undo_pictures")
    c["redo"].click(redo, [c["browse_class"]], act_outs, api_name="redo_pictures")

    @owner_only(ctx, "see the project's pictures and classes", quiet=True)
    def refresh(target, shown, picked):
        # Current classes in every list, keeping what the visitor had chosen (a typed new class
        # name included) so that coming back to the tab does not empty the gallery.
        labels = ctx.project.labels()
        return (classes_table(ctx), gr.Dropdown(choices=labels, value=target or None),
                gr.Dropdown(choices=labels, value=shown if shown in labels else None),
                gr.Dropdown(choices=labels, value=[p for p in (picked or []) if p in labels]),
                gr.Dropdown(choices=labels), str(time.time()))

    # A Gallery lays out exactly ``columns`` columns of at least 100 px and scrolls sideways when the
    # screen is narrower, which hides most pictures on a phone. Each refresh (page load, tab opened)
    # touches a hidden field whose change asks the browser for its width, and the galleries get as
    # many columns as fit.
    c["layout_tick"] = gr.Textbox(visible=False, elem_id="search-layout-tick")

    @for_anyone  # reads nothing but the width of the visitor's own window
    def fit_columns(width):
        try:
            n = max(2, min(8, (int(float(width)) - 66) // 108))
        except (TypeError, ValueError):
            n = 8
        return gr.Gallery(columns=n), gr.Gallery(columns=min(6, n))

    c["layout_tick"].change(fit_columns, [c["layout_tick"]], [c["gallery"], c["w_preview"]],
                            js="(tick) => window.innerWidth", api_visibility="private", queue=False,
                            show_progress="hidden")

    wire_web_search(ctx, c, refreshed)

    c["on_select"] = (refresh, [c["target"], c["browse_class"], c["manage_pick"]],
                      [c["classes"], c["target"], c["browse_class"], c["manage_pick"], c["move_to"],
                       c["layout_tick"]])
    return c
