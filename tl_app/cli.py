"""The command line: ``python -m tl_app VERB ...``, a thin front on the same core as the UI.

With ``--json`` a verb prints exactly one JSON document on stdout; messages
and progress go to stderr. Errors the app expects print a one-line reason (and
``{"error": ...}`` with ``--json``) and exit with status 1; no traceback.
Heavy modules (torch, fastai, gradio) are imported inside the verbs that need them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import config
from .config import HELP
from .errors import InputError, TLError


#: Work that ends sooner than this prints no progress (Review: its stages).
QUIET_SECONDS = 5.0


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _emit(args, data: Any, text: Callable[[], str] | str | None = None) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=None))
    elif text is not None:
        print(text() if callable(text) else text)
    else:
        print(json.dumps(data, ensure_ascii=False, indent=2))


def _project(args, create: bool = False):
    from .project import Project

    return Project.open(args.project, create=create)


def _progress(unit: str, *, every: float = 1.0, note: Callable[[Any], str] | None = None):
    """A progress callback printing "  120 of 500 pictures, about 2 min left" on stderr, at most every ``every`` s.

    The time left is the core's estimate (:class:`tl_app.jobs.ProgressLine`), as in the web app.
    ``note`` adds words from the report (refused links, ...).
    """
    from .jobs import ProgressLine

    line = ProgressLine(unit)
    last = [0.0]

    def progress(p) -> None:
        words = line(p)  # every report feeds the estimate, printed or not
        if p.total and p.done and (time.monotonic() - last[0] >= every or p.done >= p.total):
            last[0] = time.monotonic()
            extra = note(p) if note else ""
            _err(f"  {words}" + (f" ({extra})" if extra else ""))

    return progress


def _stoppable(what: str = "after this batch"):
    """A stop token that Ctrl-C (or a polite kill) sets: the work ends at its next safe point, keeping what is done."""
    from .jobs import StopToken

    stop = StopToken()
    _stop_on_signals(stop, what)
    return stop


# --- verbs -----------------------------------------------------------------------
def cmd_import(args) -> int:
    from .importer import import_files, plan_import
    from .project import Project

    if args.as_project:
        return _restore_project(args)
    if not args.src:
        raise TLError("Name the folders, zip files or pictures to import (or --as NEW_PROJECT_DIR to restore a "
                      "project zip).")
    if args.dry_run:
        existing = Project.open(args.project) if Project.exists(args.project) else None
        plan = plan_import(args.src, label=args.label, project=existing)
        _emit(args, plan.to_dict(), lambda: "\n".join(plan.lines()) or "Nothing to import.")
        return 0
    project = _project(args, create=True)
    stop = _stoppable("after this picture; the pictures imported so far stay")
    rep = import_files(project, args.src, label=args.label, progress=_progress("files read"), stop=stop)
    for r in rep.rejected:
        _err(f"refused: {r.file}: {r.reason}")
    if rep.elsewhere:
        if args.move_duplicates:
            a = project.move(rep.elsewhere)
            rep.labels = project.label_counts()
            _err(f"{a.summary} (undo moves them back)")
        else:
            _err(f"{rep.elsewhere_note()} Add --move-duplicates to move them.")

    def text() -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in rep.labels.items())
        return f"{rep.summary()}. Images per class: {counts or 'none'}"

    _emit(args, rep.to_dict(), text)
    return 0


def _restore_project(args) -> int:
    from .share.archive import restore_project

    if args.src or args.label or args.dry_run or args.move_duplicates:
        raise TLError("With --as, give only the project zip: import PROJECT_ZIP --as NEW_PROJECT_DIR.")
    rep = restore_project(args.project, args.as_project, progress=_progress("steps"),
                          stop=_stoppable("now; nothing is written"))
    for note in rep.notes:
        _err(f"note: {note}")
    _emit(args, rep.to_dict(), lambda: f"{rep.summary()}\nThe project is in {rep.project.root}.")
    return 0


def cmd_list(args) -> int:
    # Streamed: rows are printed as the project is read, a page at a time (50,000 pictures start at once);
    # --json still prints one JSON array.
    project = _project(args)
    n = 0
    if args.json:
        sys.stdout.write("[")
    for it in project.iter_items(label=args.label):
        if args.json:
            row = {"item": it.id, "path": str(project.path_of(it)), "label": it.label, "source": it.source}
            sys.stdout.write(("," if n else "") + json.dumps(row, ensure_ascii=False))
        else:
            sys.stdout.write(f"{it.id}  {it.label:<20} {it.source}\n")
        n += 1
        if n % 1000 == 0:
            sys.stdout.flush()
    if args.json:
        sys.stdout.write("]\n")
    elif not n:
        sys.stdout.write("(no images)\n")
    sys.stdout.flush()
    return 0


def _train_events(args) -> Callable[[dict], None]:
    """Progress lines on stderr, plus the JSON-lines events file the web app follows."""
    from .jobs import EventsFile, progress_words

    events_file = EventsFile(Path(args.events)) if getattr(args, "events", None) else None
    last = [0.0]

    def on(ev: dict) -> None:
        if events_file is not None:
            events_file(ev)
        kind = ev.get("type")
        if kind == "epoch" and ev.get("phase") == "quick":
            if ev.get("last"):
                acc = ev.get("accuracy")
                _err(f"  classifier trained in {ev['epoch']} passes over the features: train loss "
                     f"{ev['train_loss']:.4f}, valid loss {ev['valid_loss']:.4f}"
                     + (f", accuracy {acc:.1%}" if acc is not None else ""))
        elif kind == "epoch":
            acc = ev.get("accuracy")
            # fastai's fine_tune trains the new last layers alone first: a warm-up before the epochs asked for.
            what = ("warm-up (last layers only)" if ev.get("phase") == "frozen"
                    else f"epoch {ev['epoch'] - 1} of {getattr(args, 'epochs', '?')}" if ev.get("phase") == "unfrozen"
                    else f"epoch {ev['epoch']}")
            _err(f"  {what}: train loss {ev['train_loss']:.4f}, "
                 f"valid loss {ev['valid_loss']:.4f}" + (f", accuracy {acc:.1%}" if acc is not None else ""))
        elif kind == "batch" and time.time() - last[0] > 2:
            last[0] = time.time()
            _err(f"  {progress_words(ev['done'], ev['total'], ev.get('eta'), 'batches')}")
        elif kind == "phase" and ev.get("phase") in ("features", "scoring") and time.time() - last[0] > 2:
            last[0] = time.time()
            what = "computing features" if ev["phase"] == "features" else "scoring every picture for Review"
            _err(f"  {what}: {progress_words(ev['done'], ev['total'], ev.get('eta'), 'pictures')}")
        elif kind == "phase" and ev.get("phase") == "device":
            _err(f"  training on {ev['device']}")
        elif kind == "end":
            _err(f"  {ev['status']}" + (f": {ev['reason']}" if ev.get("reason") else ""))

    return on


def _train_config(args):
    from .train import TrainConfig

    return TrainConfig(arch=args.arch, epochs=args.epochs, size=args.size, pretrained=not args.no_pretrained,
                       weights=args.weights, quick=getattr(args, "quick", False), batch_size=args.batch_size,
                       lr=getattr(args, "lr", None), patience=getattr(args, "patience", None),
                       cpu=getattr(args, "cpu", False))


def _stop_on_signals(stop, what: str = "after this batch") -> None:
    """Ctrl-C (or a polite kill) asks the work to stop at its next batch; a second Ctrl-C aborts.

    ``what`` completes "stopping ...": when the work stops and what it keeps.
    """

    from . import distributed

    follower = distributed.rank() > 0  # of a distributed training: its Stop may come from the first's file

    def on_signal(signum, frame):
        if stop.is_set() and not follower:
            raise KeyboardInterrupt
        _err(f"  stopping {what} (press Ctrl-C again to abort at once)")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, on_signal)


def cmd_lr_find(args) -> int:
    from .jobs import StopToken
    from .train import find_lr

    stop = StopToken(Path(args.stop_file) if args.stop_file else None)
    _stop_on_signals(stop)
    res = find_lr(_project(args), _train_config(args), stop=stop, events=_train_events(args))
    _emit(args, res, f"suggested learning rate: {res['lr']:.2g}")
    return 0


def _without_processes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--processes":
            skip = True
        elif not a.startswith("--processes="):
            out.append(a)
    return out


def cmd_train(args) -> int:
    from . import distributed
    from .jobs import StopToken
    from .runs import new_run_id, run_dir
    from .train import train

    if args.processes != 1 and not distributed.is_distributed():
        if not 1 <= args.processes <= 64:
            raise InputError("--processes takes a number from 1 to 64.")
        if args.quick:
            raise InputError("--processes applies to a full fine-tuning; quick mode runs in one process.")
        return distributed.launch(_without_processes(args.argv), args.processes)
    project = _project(args)
    run_id = args.run_id or new_run_id()
    stop = StopToken(run_dir(project, run_id) / "STOP")
    _stop_on_signals(stop)
    cfg = _train_config(args)
    rep = train(project, cfg, run_id=run_id, stop=stop, events=_train_events(args))
    if distributed.rank() > 0:  # another process of a distributed training: the first one reports
        return 0 if rep.status in ("finished", "stopped") else 1
    m = rep.metrics

    def text() -> str:
        from .run_choice import in_use

        iu = in_use(project)
        return (f"run {rep.run}: {rep.status} in {rep.seconds:.1f} s"
                + (f", accuracy {m['accuracy']:.1%}" if m.get("accuracy") is not None else "")
                + (f"\n{iu.describe()}" if iu else ""))

    _emit(args, rep.to_dict(), text)
    return 0 if rep.status in ("finished", "stopped") else 1


def cmd_runs(args) -> int:
    from .run_choice import in_use
    from .runs import list_runs, run_names

    project = _project(args)
    all_runs = list_runs(project)
    names = run_names(all_runs)
    iu = in_use(project)
    rows = []
    for r in all_runs:
        row = {**r.to_dict(), "name": names[r.id], "in_use": bool(iu and iu.run.id == r.id)}
        if row["in_use"]:
            row["why"] = iu.describe(names)
        rows.append(row)

    def text() -> str:
        if not rows:
            return "(no runs)"
        acc = lambda r: "–" if r["metrics"].get("accuracy") is None else f"{r['metrics']['accuracy']:.0%}"  # noqa: E731
        lines = [f"{r['name']:<42} {r['status']:<9} {acc(r):>4}  {r['run']}" + ("  (in use)" if r["in_use"] else "")
                 for r in rows]
        return "\n".join(lines + ([iu.describe(names)] if iu else ["No run is in use: none finished with a model."]))

    _emit(args, rows, text)
    return 0


def cmd_review(args) -> int:
    from . import runs
    from .errors import Stopped
    from .jobs import ProgressLine
    from .review import REASON_NAMES, rank, stopped_early

    stage_line, pictures_line = ProgressLine("stages done"), ProgressLine("pictures")
    started, last, stage = time.monotonic(), [0.0], [""]

    def progress(p) -> None:
        # Quiet when it is quick (most projects); a review that takes a while says where it is:
        # "  finding copies (1 of 3 stages done)", then "  finding copies: checking new pictures, 1,200 of 3,000
        # pictures, about 20 s left" at most every second.
        quiet = time.monotonic() - started < QUIET_SECONDS
        if p.unit == "pictures":
            words = pictures_line(p)
            if not quiet and time.monotonic() - last[0] >= 1:
                last[0] = time.monotonic()
                _err(f"  {stage[0]}: {p.message}, {words}")
            return
        stage[0] = p.message
        words = stage_line(p)
        if p.done < p.total and not quiet:
            _err(f"  {p.message} ({words})")

    project = _project(args)
    try:
        rows = [r.to_dict() for r in rank(project, top=args.top, label=args.label, kind=args.kind,
                                          loose=args.loose, progress=progress,
                                          stop=_stoppable("at the next stage; nothing is shown half-judged"))]
    except Stopped as e:
        _err(f"stopped: {e}")
        if args.json:
            print(json.dumps({"stopped": True, "error": str(e)}, ensure_ascii=False))
        return 130
    run = runs.active_run(project)
    if stopped_early(project, run):
        _err(f"note: {run.name} was stopped before it checked every picture: it cannot tell which pictures are "
             "in the wrong class or outliers, so none is flagged. Train to the end to find them.")

    def line(r: dict) -> str:
        guess = f"-> {r['predicted']:<14} {r['confidence']:.0%}" if r["predicted"] else ""
        also = f" (also: {', '.join(REASON_NAMES[a] for a in r['also'])})" if r.get("also") else ""
        return (f"{r['item']}  {r['label']:<14} {REASON_NAMES[r['reason']]:<13} {r['score']:.2f}  {guess}  "
                f"{r['name']}: {r['detail']}{also}")

    def text() -> str:
        if not rows:
            return "(nothing to review)"
        if args.kind != "duplicates":
            return "\n".join(line(r) for r in rows)
        # Duplicates as groups: the first picture of each group, then its copies.
        groups: dict[str, list[dict]] = {}
        for r in rows:
            groups.setdefault(r["group"], []).append(r)
        out = []
        for n, (first, members) in enumerate(groups.items(), 1):
            src = members[0]["duplicate_of_source"] or ""
            name = src.replace("\\", "/").rsplit("/", 1)[-1] or first
            out.append(f"Group {n}: {len(members) + 1} pictures, the first added kept: {first}  {name}")
            for r in members:
                out.append(f"  {r['item']}  {r['label']:<14} {r['match']:<9} {r['score']:.2f}  "
                           f"{r['name']}: {r['detail']}")
        return "\n".join(out)

    _emit(args, rows, text)
    return 0


def _action_dict(a) -> dict:
    return {"action": a.id, "kind": a.kind, "state": a.state, "summary": a.summary,
            "items": [p["item"] for p in a.items]}


def cmd_delete(args) -> int:
    a = _project(args).delete(args.items)
    _emit(args, _action_dict(a), f"{a.summary} (undo restores them)")
    return 0


def cmd_relabel(args) -> int:
    a = _project(args).relabel(args.items, args.to)
    _emit(args, _action_dict(a), a.summary)
    return 0


def _class_action(args, a) -> None:
    _emit(args, {**_action_dict(a), "labels": a.labels}, f"{a.summary} (undo reverts it)")


def cmd_class_list(args) -> int:
    counts = _project(args).label_counts()
    _emit(args, counts, lambda: "\n".join(f"{k:<24} {v}" for k, v in counts.items()) or "(no classes)")
    return 0


def cmd_class_rename(args) -> int:
    from .errors import LabelExists

    try:
        a = _project(args).rename_label(args.old, args.new, merge=args.merge)
    except LabelExists as e:
        raise LabelExists(f"{e} (add --merge, or use `class merge`)") from None
    _class_action(args, a)
    return 0


def cmd_class_merge(args) -> int:
    _class_action(args, _project(args).merge_labels(args.names, args.into))
    return 0


def cmd_class_delete(args) -> int:
    _class_action(args, _project(args).delete_labels(args.names))
    return 0


def cmd_keep(args) -> int:
    a = _project(args).keep(args.items)
    _emit(args, _action_dict(a), a.summary)
    return 0


def cmd_undo(args) -> int:
    a = _project(args).undo()
    _emit(args, _action_dict(a), f"undone: {a.summary}")
    return 0


def cmd_redo(args) -> int:
    a = _project(args).redo()
    _emit(args, _action_dict(a), f"redone: {a.summary}")
    return 0


def cmd_predict(args) -> int:
    from .classify import classify_many, gather, write_csv, write_sorted_zip
    from .jobs import Progress

    project = _project(args)
    pictures = gather(args.images, names={a: a for a in args.images})
    shown = _progress("pictures", every=2.0)

    def progress(p: Progress) -> None:
        if p.total > 64:
            shown(p)

    result = classify_many(project, pictures, run_id=args.run, progress=progress,
                           stop=_stoppable("after this batch; the pictures classified so far are reported"))
    for p in result.refused:
        _err(f"refused: {p.file}: {p.error}")
    if args.csv:
        write_csv(result, args.csv)
        _err(f"wrote {args.csv} ({len(result.predictions)} rows)")
    if args.sorted:
        write_sorted_zip(result, args.sorted)
        _err(f"wrote {args.sorted} (a folder per class)")
    if len(result.predictions) > 1:
        _err(result.summary())
    preds = result.predictions
    _emit(args, [p.to_dict() for p in preds], lambda: "\n".join(
        f"{p.file}: " + (p.error or ("none of these (nearest: " if p.unknown else "")
                         + ", ".join(f"{k} {v:.1%}" for k, v in p.top(3).items()) + (")" if p.unknown else ""))
        for p in preds))
    return 0 if result.classified else 1


EXPORT_FORMATS = ("bundle", "space", "dataset", "project")


def cmd_export(args) -> int:
    project = _project(args)
    out = Path(args.out)
    if args.format in ("bundle", "space"):
        from .share.bundle import export_bundle, export_space

        fn = export_bundle if args.format == "bundle" else export_space
        rep = fn(project, out, run_id=args.run, progress=_export_progress(),
                 stop=_stoppable("now; nothing is left half-written"))
        p = rep.parity

        def text() -> str:
            return (f"{rep.run_name} exported as a {rep.format} to {rep.out} in {rep.seconds:.1f} s.\n"
                    f"Parity with the app: {p.describe()}.")

        _emit(args, rep.to_dict(), text)
        return 0
    if args.run:
        raise InputError("--run chooses a model; the dataset and project formats take every picture and run.")
    from .share import archive

    fn = archive.export_dataset if args.format == "dataset" else archive.export_project
    rep = fn(project, out, progress=_progress("files" if args.format == "project" else "pictures"),
             stop=_stoppable("now; nothing is left half-written"))
    data = rep.to_dict()
    _emit(args, data, f"Exported the {args.format} ({rep.pictures} pictures) to {data['out']}.")
    return 0


def _export_progress():
    """An export's progress: its stages in words, and "N of M pictures, about X left" while it checks them."""
    counted = _progress("pictures checked")

    def progress(p) -> None:
        if isinstance(p, str):
            _err(f"  {p}")
        else:
            counted(p)

    return progress


def _download_progress():
    return _progress("links", note=lambda p: f"{p.failed} refused" if p.failed else "")


def _report_download(args, rep, extra: dict | None = None) -> None:
    for r in rep.rejected:
        _err(f"refused: {r['url']}: {r['reason']}")
    _emit(args, {**(extra or {}), **rep.to_dict()}, f"{rep.summary()} in {rep.seconds:.1f} s")


def cmd_download(args) -> int:
    from .download import download_to_project, tasks_from_urls

    try:
        with open(args.urls, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise TLError(f"Cannot read the list of links {args.urls}: {e.strerror or e}") from None
    project = _project(args, create=True)
    rep = download_to_project(project, args.label, tasks_from_urls(lines), progress=_download_progress(),
                              stop=_stoppable("now; the pictures downloaded so far stay"))
    _report_download(args, rep)
    return 0


def cmd_search(args) -> int:
    from .download import download_to_project, tasks_from_results
    from .search import DDGSProvider, RecordedProvider, SearchCache, SearchFilters, search_images

    project = _project(args, create=True)
    label = project.add_label(args.label)
    query = args.query or label
    provider = RecordedProvider.from_file(args.results) if args.results else DDGSProvider(args.engine)
    filters = SearchFilters(size=args.size, type_image=args.type, layout=args.layout,
                            license_image=args.license, safesearch=args.safesearch)
    _err(f"searching for '{query}' ...")
    results = search_images(query, provider=provider, max_results=args.max, filters=filters,
                            cache=None if args.results else SearchCache(project))
    if args.save_results:
        Path(args.save_results).write_text(json.dumps([r.to_dict() for r in results], indent=1), encoding="utf-8")
    _err(f"  {len(results)} pictures found; downloading into '{label}'")
    rep = download_to_project(project, label, tasks_from_results(results, query=query, engine=provider.name),
                              progress=_download_progress(), stop=_stoppable("now; the pictures downloaded so far stay"))
    _report_download(args, rep, {"query": query, "found": len(results)})
    return 0


def cmd_publish(args) -> int:
    from .share.publish import publish

    project = _project(args)
    _err(f"publishing the {args.to} to the Hugging Face Hub ...")
    rep = publish(project, args.to, args.repo, run=args.run, token=args.token, private=not args.public)
    _emit(args, rep.to_dict(), rep.summary())
    return 0


def cmd_serve(args) -> int:
    from .ui.app import launch

    project = Path(args.project) if args.project else config.default_project_dir()
    launch(project, host=args.host, port=args.port, share_mode=args.shared)
    return 0


# --- parser -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .models import list_archs

    parser = argparse.ArgumentParser(prog="python -m tl_app",
                                     description="Build an image classifier without code: import, review, train, classify.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, fn, help: str, project: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if project:
            p.add_argument("project", metavar="PROJECT", help=HELP["project"])
        p.add_argument("--json", action="store_true", help=HELP["json"])
        p.set_defaults(fn=fn)
        return p

    p = verb("import", cmd_import, "Import folders (a sub-folder per class), zip files or image files; or, with "
             "--as, restore a project zip (written by `export --format project`) as a new project.")
    p.add_argument("src", nargs="*", metavar="SRC", help=HELP["import_src"])
    p.add_argument("--as", dest="as_project", metavar="NEW_PROJECT_DIR",
                   help="PROJECT is a project zip: restore it as a new project in this folder (classes, pictures, "
                        "where they came from, decisions, undo history and runs).")
    p.add_argument("--label", help=HELP["label"] + " Every file goes into this class (a zip's folders too).")
    p.add_argument("--dry-run", action="store_true",
                   help="Only tell what the import would do (which classes, how many pictures); change nothing.")
    p.add_argument("--move-duplicates", action="store_true",
                   help="Pictures already in the project in another class move to the class this import gives "
                        "them (one undoable action).")

    from .search import BACKENDS, LAYOUTS, LICENSES, SAFESEARCH, SIZES, TYPES

    p = verb("search", cmd_search, "Search the web for pictures of a class and download them.")
    p.add_argument("--label", required=True, help=HELP["label"])
    p.add_argument("--query", help="What to search for (default: the class name).")
    p.add_argument("--max", type=int, default=100, help="How many pictures to ask for (default 100).")
    p.add_argument("--size", choices=SIZES)
    p.add_argument("--type", choices=TYPES, help="photo, clipart, gif, transparent or line drawings.")
    p.add_argument("--layout", choices=LAYOUTS)
    p.add_argument("--license", choices=LICENSES)
    p.add_argument("--safesearch", choices=SAFESEARCH, default="moderate")
    p.add_argument("--engine", choices=BACKENDS, default="duckduckgo", help="Search engine (default duckduckgo).")
    p.add_argument("--results", help="Use search results saved earlier (JSON) instead of asking the engine.")
    p.add_argument("--save-results", help="Save the search results as JSON.")

    p = verb("download", cmd_download, "Download pictures from a list of links (one per line) into a class.")
    p.add_argument("--label", required=True, help=HELP["label"])
    p.add_argument("--urls", required=True, metavar="FILE", help="A text file with one link per line.")

    p = verb("list", cmd_list, "List the images of the project.")
    p.add_argument("--label", help="Only this class.")

    def model_options(p):
        p.add_argument("--arch", default=config.DEFAULT_ARCH, choices=list_archs(), help=HELP["arch"])
        p.add_argument("--epochs", type=int, default=config.DEFAULT_EPOCHS, help=HELP["epochs"])
        p.add_argument("--size", type=int, default=config.DEFAULT_SIZE, help=HELP["size"])
        p.add_argument("--batch-size", type=int, default=config.DEFAULT_BATCH_SIZE, help="Images per training step.")
        p.add_argument("--no-pretrained", action="store_true", help=HELP["no_pretrained"])
        p.add_argument("--weights", metavar="FILE", help=HELP["weights"])
        p.add_argument("--cpu", action="store_true", help=HELP["cpu"])
        p.add_argument("--events", help=argparse.SUPPRESS)

    p = verb("train", cmd_train, "Train a classifier on the project's images (full fine-tuning; --quick for seconds).")
    model_options(p)
    p.add_argument("--quick", action="store_true", help=HELP["quick"])
    p.add_argument("--lr", type=float, help=HELP["lr"])
    p.add_argument("--patience", type=int, metavar="N", help=HELP["patience"])
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--processes", type=int, default=1, metavar="N", help=HELP["processes"])

    p = verb("lr-find", cmd_lr_find, "Suggest a learning rate for fine-tuning (fastai's lr_find).")
    model_options(p)
    p.add_argument("--stop-file", help=argparse.SUPPRESS)

    verb("runs", cmd_runs, "List the training runs.")

    p = verb("review", cmd_review, "Items most likely to be wrong (label, duplicate, outlier, poor quality), "
                                   "most suspicious first.")
    p.add_argument("--top", type=int, default=None, help=HELP["top"])
    p.add_argument("--label", help="Only this class.")
    p.add_argument("--kind", choices=["label", "duplicates", "outliers", "all"], default="all",
                   help="Which problems: wrong labels (every picture ranked), copies (shown in groups), outliers "
                        "(and poor pictures: broken, flat, dark, blurred, tiny), or all.")
    p.add_argument("--loose", action="store_true",
                   help="Duplicates: also mirrored copies and possible near copies (not counted as problems).")

    p = verb("delete", cmd_delete, "Move items to the trash (undo brings them back).")
    p.add_argument("items", nargs="+", metavar="ITEM")
    p = verb("relabel", cmd_relabel, "Move items to another class.")
    p.add_argument("items", nargs="+", metavar="ITEM")
    p.add_argument("--to", required=True, metavar="LABEL")
    p = sub.add_parser("class", help="List, rename, merge or delete classes (each change is undoable).",
                       description="List, rename, merge or delete classes. Names match whatever the letter case; "
                                   "every change is one undoable action.")
    csub = p.add_subparsers(dest="class_verb", required=True, metavar="ACTION")

    def class_verb(name: str, fn, help: str) -> argparse.ArgumentParser:
        cp = csub.add_parser(name, help=help, description=help)
        cp.add_argument("project", metavar="PROJECT", help=HELP["project"])
        cp.add_argument("--json", action="store_true", help=HELP["json"])
        cp.set_defaults(fn=fn)
        return cp

    class_verb("list", cmd_class_list, "The classes and how many pictures each holds.")
    cp = class_verb("rename", cmd_class_rename, "Rename a class (its folder and pictures follow).")
    cp.add_argument("old", metavar="OLD")
    cp.add_argument("new", metavar="NEW")
    cp.add_argument("--merge", action="store_true",
                    help="If NEW is already a class, merge OLD into it (without this, that is refused).")
    cp = class_verb("merge", cmd_class_merge, "Put the pictures of several classes into one; the others are removed.")
    cp.add_argument("names", nargs="+", metavar="NAME")
    cp.add_argument("--into", required=True, metavar="CLASS",
                    help="The class that receives them: one of the NAMEs, another class or a new name.")
    cp = class_verb("delete", cmd_class_delete, "Delete classes: their pictures go to the trash (undo brings them back).")
    cp.add_argument("names", nargs="+", metavar="NAME")

    p = verb("keep", cmd_keep, "Mark items as checked, so review stops showing them.")
    p.add_argument("items", nargs="+", metavar="ITEM")
    verb("undo", cmd_undo, HELP["undo"])
    verb("redo", cmd_redo, HELP["redo"])

    p = verb("predict", cmd_predict, "Classify pictures with the project's model: files, zip files and folders "
                                     "(every picture inside them).")
    p.add_argument("images", nargs="+", metavar="PATH", help="Pictures, zip files or folders.")
    p.add_argument("--csv", metavar="OUT", help="Also write the answers as CSV (file, label, confidence, unknown, "
                                                "unknown_score, top3, error), one row per file.")
    p.add_argument("--sorted", metavar="ZIP", help="Also write a zip with a folder per class holding the pictures "
                                                   "(and the CSV).")
    p.add_argument("--run", help="Use this run's model instead of the active one.")

    p = verb("export", cmd_export, "Export a run's model (a bundle with ONNX and predict.py, or a classify-only "
                                   "Space), or the dataset or the whole project.")
    p.add_argument("--out", required=True, metavar="PATH", help="A new folder (bundle, space) or file (dataset, project).")
    p.add_argument("--run", help="Export this run's model instead of the one in use.")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="bundle",
                   help="bundle (default): model.safetensors, model.json, model.onnx, predict.py and a model card; "
                        "space: a classify-only Gradio Space; dataset: a zip of the pictures with metadata.csv; "
                        "project: a zip of the whole project.")

    p = verb("publish", cmd_publish, "Publish the model, a classify-only Space or the dataset to the Hugging Face "
             "Hub (token: --token, HF_TOKEN, or `hf auth login`).")
    p.add_argument("--to", required=True, choices=("model", "space", "dataset"),
                   help="model: the exported model bundle; space: a classify-only Gradio Space; dataset: the "
                        "pictures with metadata.csv.")
    p.add_argument("--repo", required=True, metavar="NAME",
                   help="The repository: NAME (under your user name) or OWNER/NAME; created if it does not exist.")
    p.add_argument("--run", help="For model and space: this run's model instead of the one in use.")
    p.add_argument("--token", help="A Hugging Face token with write access (default: HF_TOKEN, else the one "
                                   "`hf auth login` saved).")
    p.add_argument("--public", action="store_true",
                   help="Make a new repository public (default: private; an existing one keeps its visibility).")

    p = verb("serve", cmd_serve, "Start the web app.", project=False)
    p.add_argument("--project", help="Project folder (default: the default project in your data folder).")
    p.add_argument("--port", type=int, default=config.DEFAULT_PORT)
    p.add_argument("--host", default=None,
                   help="Address to listen on (default: TL_HOST, else 127.0.0.1, this computer only). Another "
                        "address needs --shared or a login (TL_AUTH=user:password).")
    p.add_argument("--shared", action="store_true",
                   help="For a public server: visitors may only classify pictures and read about the model (owners "
                        "log in with TL_AUTH, or sign in with Hugging Face on a Space); smaller queues, limits per "
                        "visitor, no error details.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # train --processes starts the same command again
    if argv is None:  # a command of its own process (not a call from a program): its passes reuse freed memory
        from .features import freeze_loaded_objects, keep_freed_memory

        keep_freed_memory()
        freeze_loaded_objects()  # what is loaded now stays for the command's life
    try:
        return args.fn(args)
    except TLError as e:
        _err(f"error: {e}")
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e)}, ensure_ascii=False))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
