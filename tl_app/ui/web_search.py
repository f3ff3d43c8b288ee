"""The "Search the web" part of tab 1: search several classes, preview, pick, download with Stop.

Wiring only: the searching is :func:`tl_app.search.search_classes`, the
downloading :func:`tl_app.download.download_classes`. What a visitor found stays
in that visitor's ``gr.State``; the running download's stop token is kept per
browser session in ``ctx.downloads``.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urldefrag

import gradio as gr
import pandas as pd

from ..download import ClassDownload, ClassesReport, download_classes, tasks_from_results
from ..fetch import looks_offline
from ..jobs import Progress, ProgressLine, StopToken
from ..search import (ANY, BACKENDS, LAYOUTS, LICENSES, MAX_CLASSES, SAFESEARCH, SIZES, TYPES, SearchCache,
                      SearchFilters, SearchResult, parse_class_queries, search_classes)
from ..errors import InputError
from .adapters import UIContext, owner_only, visitor_id

DEFAULT_COUNT = 100
MAX_COUNT = 300
#: How often a running download redraws its progress (seconds).
REDRAW = 0.5

TYPE_NAMES = {"photo": "Photos", "clipart": "Clip art", "gif": "Animated GIFs", "transparent": "Transparent",
              "line": "Line drawings"}
LICENSE_NAMES = {"any": "Any Creative Commons", "Public": "Public domain", "Share": "Free to share",
                 "ShareCommercially": "Free to share and use commercially", "Modify": "Free to modify and share",
                 "ModifyCommercially": "Free to modify, share and use commercially"}
CLASSES_INFO = (f"Several at once, separated by commas (at most {MAX_CLASSES}). Each class is searched by its name; "
                "to search with other words, write 'class = words', e.g. 'millipede = millipede insect'.")
REFUSALS_LABEL = "Refused links"


def _choices(values, names: dict | None = None) -> list[tuple[str, str]]:
    """Dropdown choices: "Any" (no filter) first, then each value under a readable name."""
    return [("Any", ANY)] + [((names or {}).get(v, v), v) for v in values]


def preview_url(row: dict) -> str:
    """The link the browser loads for a result's preview (the thumbnail, else the picture).

    The fragment is for Gradio: its Gallery fetches a link ending in ".svg" on the
    server to inline it, and treats ".mp4" and the like as videos. With
    ``#preview`` at the end no link looks like either, the server never fetches
    a preview, and the browser ignores the fragment.
    """
    url = urldefrag(row.get("thumbnail") or row["image"]).url
    return url + "#preview"


def _caption(row: dict, selected: bool) -> str:
    title = " ".join((row.get("title") or "").split())
    title = title if len(title) <= 60 else title[:59] + "…"
    return ("☑ " if selected else "☐ ") + row["label"] + (f" · {title}" if title else "")


def preview(rows: list[dict], selected: set[int]) -> list[tuple[str, str]]:
    return [(preview_url(r), _caption(r, i in selected)) for i, r in enumerate(rows)]


def parse_selection(text: str | None, n: int) -> set[int]:
    """Result numbers (counting from 0, in preview order) from ``"0, 3, 5"``; checked against ``n``."""
    out = set()
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) >= n:
            raise InputError(f"'{part}' is not a result number (there are {n} results, numbered from 0).")
        out.add(int(part))
    return out


def _selection_text(selected: set[int]) -> str:
    return ",".join(str(i) for i in sorted(selected))


def selection_note(rows: list[dict], selected: set[int]) -> str:
    if not rows:
        return ""
    counts: dict[str, int] = {}
    for i in sorted(selected):
        counts[rows[i]["label"]] = counts.get(rows[i]["label"], 0) + 1
    if not selected:
        return (f"{len(rows)} pictures found. Click pictures to select them (☑) and download those, "
                "or download all.")
    per = ", ".join(f"{k} {v}" for k, v in counts.items())
    return f"**{len(selected)} of {len(rows)} selected** ({per}). Click a picture again to unselect it."


def search_note(found, refused: str, not_searched) -> str:
    lines = []
    for cr in found:
        how = " (from this project's saved searches)" if cr.cached and cr.results else ""
        query = f" for “{cr.query}”" if cr.query != cr.label else ""
        if cr.results:
            lines.append(f"- **{cr.label}**: {len(cr.results)} pictures found{query}{how}")
        else:
            lines.append(f"- **{cr.label}**: nothing found{query}; try other words or fewer filters")
    if refused:
        lines.append(f"\n{refused}")
        if not_searched:
            names = ", ".join(cq.label for cq in not_searched)
            lines.append(f"\nNot searched: {names}. The upload area below is set to '{not_searched[0].label}'.")
    return "\n".join(lines)


# --- downloads --------------------------------------------------------------------------------
def _jobs(rows: list[dict]) -> list[ClassDownload]:
    """The chosen results as one download per class, in the order the classes were found."""
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    jobs = []
    for label, rs in by_label.items():
        results = [SearchResult(**{k: r[k] for k in SearchResult.__dataclass_fields__}) for r in rs]
        tasks = []
        for r, res in zip(rs, results):
            tasks += tasks_from_results([res], query=r["query"], engine=r["engine"])
        jobs.append(ClassDownload(label, tasks))
    return jobs


def progress_note(jobs: list[ClassDownload], seen: dict[str, Progress], stopping: bool, overall: str = "") -> str:
    """The table of progress per class; ``overall`` ("120 of 500 links, about 2 min left") heads it."""
    lines = ["| Class | Done | To fetch | Failed | |", "|---|---:|---:|---:|---|"]
    for j in jobs:
        p = seen.get(j.label)
        if p is None:
            lines.append(f"| {j.label} | 0 | {len(j.tasks)} | 0 | waiting |")
        else:
            state = "done" if p.done >= p.total else ("stopping…" if stopping else "downloading…")
            lines.append(f"| {j.label} | {p.done} | {p.total} | {p.failed} | {state} |")
    head = "**Stopping…**" if stopping else ("**Downloading…** " + (f"{overall}. " if overall else "")
                                            + "Stop ends it within a second; what arrived stays.")
    return head + "\n\n" + "\n".join(lines)


def final_note(ctx: UIContext, jobs: list[ClassDownload], rep: ClassesReport) -> str:
    reasons = [x["reason"] for r in rep.reports.values() for x in r.rejected]
    if rep.error:
        head = f"**The download ended early.** {rep.error}"
    elif not any(r.imported for r in rep.reports.values()) and looks_offline(reasons):
        head = ("**No internet connection:** none of the sites could be found. Check this computer's connection "
                "and download again (the links are tried again), or add your own pictures below.")
    elif rep.stopped:
        head = "**Download stopped.** The pictures that arrived are kept; download again to fetch the rest."
    else:
        head = "**Download finished.**"
    counts = {k.casefold(): v for k, v in ctx.project.label_counts().items()}
    lines = [head, ""]
    for j in jobs:
        r = rep.reports.get(j.label)
        if r is None:
            lines.append(f"- **{j.label}**: not started")
            continue
        now = counts.get(j.label.casefold(), 0)
        lines.append(f"- **{j.label}**: {r.summary()}; the class has {now} picture{'s' if now != 1 else ''} now")
    refused = sum(len(r.rejected) for r in rep.reports.values())
    if refused:
        lines.append(f"\nEvery refused link is listed under “{REFUSALS_LABEL}” with the reason.")
    return "\n".join(lines)


def refusals_table(rep: ClassesReport | None) -> pd.DataFrame:
    rows = [{"Class": label, "Link": x["url"], "Reason": x["reason"]}
            for label, r in (rep.reports.items() if rep else ()) for x in r.rejected]
    return pd.DataFrame(rows, columns=["Class", "Link", "Reason"])


# --- the widgets --------------------------------------------------------------------------------
def create_web_search(ctx: UIContext) -> dict:
    """The search form, the preview and the download controls (events are wired by :func:`wire_web_search`)."""
    c: dict = {}
    gr.Markdown("### Search the web", elem_id="web-heading")
    with gr.Row():
        c["w_classes"] = gr.Textbox(label="Classes to search for", placeholder="centipede, millipede, spider",
                                    info=CLASSES_INFO, lines=1, max_lines=6, scale=4, elem_id="web-classes")
        c["w_count"] = gr.Slider(1, MAX_COUNT, value=DEFAULT_COUNT, step=1, label="Pictures per class", scale=2,
                                 elem_id="web-count")
    with gr.Accordion("Filters and search engine", open=False, elem_id="web-filters"):
        with gr.Row():
            c["w_size"] = gr.Dropdown(_choices(SIZES), value=ANY, label="Size", elem_id="web-size")
            c["w_type"] = gr.Dropdown(_choices(TYPES, TYPE_NAMES), value=ANY, label="Type", elem_id="web-type")
            c["w_layout"] = gr.Dropdown(_choices(LAYOUTS), value=ANY, label="Layout", elem_id="web-layout")
            c["w_license"] = gr.Dropdown([("Any licence", "")] + _choices(LICENSES, LICENSE_NAMES)[1:], value="",
                                         label="Licence", elem_id="web-license")
        with gr.Row():
            c["w_safesearch"] = gr.Radio(list(SAFESEARCH), value="moderate", label="Safe search",
                                         elem_id="web-safesearch")
            c["w_engine"] = gr.Dropdown(list(BACKENDS), value=BACKENDS[0], label="Search engine",
                                        elem_id="web-engine",
                                        info="duckduckgo applies every filter; bing ignores safe search and "
                                             "filters; auto mixes engines.")
    c["w_search"] = gr.Button("Search", variant="primary", elem_id="web-search")
    c["w_search_status"] = gr.Markdown(elem_id="web-search-status")
    c["w_results"] = gr.State([])
    # The chosen result numbers, in a hidden textbox rather than a State so that "download
    # selected" takes them as a parameter (the API has no gallery to click); checked on arrival.
    c["w_selected"] = gr.Textbox(visible=False, label="Selected results", elem_id="web-selected")
    # Only ever an output: a Gallery given as an input would have the server fetch its links.
    # Hidden until a search has found something: an empty gallery would take half the screen.
    c["w_preview"] = gr.Gallery(label="Found pictures (click to select)", columns=6, height=460,
                                allow_preview=False, object_fit="cover", visible=False, elem_id="web-preview")
    c["w_selection"] = gr.Markdown(elem_id="web-selection")
    # The download buttons appear with the first results: before a search they could only say "search first".
    with gr.Row(visible=False, elem_id="web-download-actions") as c["w_actions"]:
        c["w_download_all"] = gr.Button("Download all", variant="primary", elem_id="web-download-all")
        c["w_download_selected"] = gr.Button("Download selected", elem_id="web-download-selected")
        c["w_clear"] = gr.Button("Unselect all", elem_id="web-clear-selection")
        c["w_stop"] = gr.Button("Stop", variant="stop", elem_id="web-stop")
    # Gradio's progress bar covers the component it is shown on: an empty line of its own keeps
    # the table of progress per class readable.
    c["w_progress"] = gr.Markdown(visible=False, min_height=72, elem_id="web-download-progress")
    c["w_download_status"] = gr.Markdown(elem_id="web-download-status")
    with gr.Accordion(REFUSALS_LABEL, open=False, elem_id="web-refusals-box") as c["w_refusals_box"]:
        c["w_refusals"] = gr.Dataframe(refusals_table(None), interactive=False, wrap=True, max_height=320,
                                       elem_id="web-refusals")
    return c


def wire_web_search(ctx: UIContext, c: dict, refreshed) -> None:
    """Events of the web search; ``refreshed(label)`` gives the tab's views (``c["view_outs"]``): class table,
    dropdowns, gallery and its selection, showing class ``label``."""

    @owner_only(ctx, "search the web")
    def search(request: gr.Request, **form):
        queries = parse_class_queries(form["classes"])
        filters = SearchFilters.from_choices(size=form["size"], type_image=form["type_image"],
                                             layout=form["layout"], license_image=form["license_image"],
                                             safesearch=form["safesearch"])
        provider = ctx.provider_for(form["engine"])
        limiter = ctx.search_limiter
        visitor = visitor_id(request, ctx.access)
        found = search_classes(queries, provider=provider, max_results=int(form["per_class"]), filters=filters,
                               cache=SearchCache(ctx.project),
                               before_asking=(lambda: limiter.check(visitor)) if limiter else None)
        rows = [{"label": cr.label, "query": cr.query, "engine": provider.name, **r.to_dict()}
                for cr in found.found for r in cr.results]
        target = gr.Dropdown(value=found.not_searched[0].label) if found.not_searched else gr.skip()
        return (rows, "", gr.Gallery(value=preview(rows, set()), visible=bool(rows)),
                search_note(found.found, found.refused, found.not_searched), selection_note(rows, set()), target,
                gr.Row(visible=bool(rows)))

    form = {"classes": c["w_classes"], "per_class": c["w_count"], "size": c["w_size"], "type_image": c["w_type"],
            "layout": c["w_layout"], "license_image": c["w_license"], "safesearch": c["w_safesearch"],
            "engine": c["w_engine"]}
    search_outs = [c["w_results"], c["w_selected"], c["w_preview"], c["w_search_status"], c["w_selection"],
                   c["target"], c["w_actions"]]
    c["w_search"].click(search, None, search_outs, inputs_kwargs=form, api_name="search_web",
                        show_progress_on=[c["w_search_status"]])
    c["w_classes"].submit(search, None, search_outs, inputs_kwargs=form, api_visibility="private",
                          show_progress_on=[c["w_search_status"]])

    @owner_only(ctx, "select search results")
    def toggle(rows, selected, evt: gr.SelectData):
        chosen = parse_selection(selected, len(rows))
        i = evt.index if isinstance(evt.index, int) else None
        if i is not None and 0 <= i < len(rows):
            chosen ^= {i}
        return _selection_text(chosen), preview(rows, chosen), selection_note(rows, chosen)

    sel_outs = [c["w_selected"], c["w_preview"], c["w_selection"]]
    # queue=False: a click answers at once instead of waiting for a queue slot (the handler is cheap).
    c["w_preview"].select(toggle, [c["w_results"], c["w_selected"]], sel_outs, api_visibility="private",
                          show_progress="hidden", queue=False)

    @owner_only(ctx, "select search results")
    def clear(rows):
        return "", preview(rows, set()), selection_note(rows, set())

    c["w_clear"].click(clear, [c["w_results"]], sel_outs, api_visibility="private", show_progress="hidden",
                       queue=False)

    dl_outs = [c["w_progress"], c["w_download_status"], c["w_refusals"], c["w_refusals_box"], *c["view_outs"]]
    rest = [gr.skip()] * (len(c["view_outs"]) - 1)  # the views other than the class table, while downloading

    def run(rows: list[dict], request: gr.Request, progress: gr.Progress):
        """Download ``rows`` in a worker thread, redrawing the progress until it ends or is stopped."""
        jobs = _jobs(rows)
        # Per browser session, not per visitor_id: two windows from one address each stop their own.
        session = f"session:{request.session_hash}"
        token = StopToken()
        with ctx.lock:
            if session in ctx.downloads:
                raise InputError("A download is already running in this window: wait for it, or Stop it first.")
            ctx.downloads[session] = token
        seen: dict[str, Progress] = {}
        box: dict = {}

        def on_progress(label: str, p: Progress) -> None:
            seen[label] = p

        def work():
            try:
                box["report"] = download_classes(ctx.project, jobs, progress=on_progress, stop=token)
            except BaseException as e:  # noqa: BLE001 - handed to the handler, which shows it
                box["error"] = e

        worker = threading.Thread(target=work, name=f"download-{session[-8:]}", daemon=True)
        worker.start()
        total = sum(len(j.tasks) for j in jobs)
        line = ProgressLine("links")  # the core's time-left estimate, as on the command line
        try:
            finished: set[str] = set()
            first = True
            while worker.is_alive():
                worker.join(REDRAW)
                now = seen.copy()  # the worker adds classes as it reaches them
                done = sum(p.done for p in now.values()) + sum(
                    len(j.tasks) - now[j.label].total for j in jobs if j.label in now)  # skipped links count as done
                overall = line(Progress(min(done, total), total))
                progress((min(done, total), total), desc=f"Downloading: {overall}", unit="links")
                newly = {label for label, p in now.items() if p.done >= p.total} - finished
                finished |= newly
                table = refreshed()[0] if newly else gr.skip()
                # The first redraw also clears the refusals of an earlier download.
                yield (gr.Markdown(visible=True), progress_note(jobs, now, token.is_set(), overall),
                       refusals_table(None) if first else gr.skip(),
                       gr.Accordion(label=REFUSALS_LABEL) if first else gr.skip(),
                       table, *rest)
                first = False
        finally:
            if worker.is_alive():  # the visitor went away or an error happened: do not leave work behind
                token.set()
                worker.join(30)
            with ctx.lock:
                if ctx.downloads.get(session) is token:
                    del ctx.downloads[session]
        if "error" in box:
            raise box["error"]
        rep: ClassesReport = box["report"]
        refused = refusals_table(rep)
        shown = next(iter(rep.reports), None)  # the first class downloaded is shown below
        stored = {k.casefold(): k for k in ctx.project.labels()}
        yield (gr.Markdown(visible=False), final_note(ctx, jobs, rep), refused,
               gr.Accordion(label=f"{REFUSALS_LABEL} ({len(refused)})", open=False),
               *refreshed(stored.get(shown.casefold()) if shown else None))

    def need(rows):
        if not rows:
            raise InputError("Search first: the pictures found appear above, then download them.")
        return rows

    @owner_only(ctx, "download pictures")
    def download_all(rows, request: gr.Request, progress=gr.Progress()):
        yield from run(need(rows), request, progress)

    @owner_only(ctx, "download pictures")
    def download_selected(rows, selected, request: gr.Request, progress=gr.Progress()):
        chosen = parse_selection(selected, len(need(rows)))
        if not chosen:
            raise InputError("Click the pictures you want first (they get a ☑), or use Download all.")
        yield from run([rows[i] for i in sorted(chosen)], request, progress)

    c["w_download_all"].click(download_all, [c["w_results"]], dl_outs, api_name="download_all",
                              show_progress_on=[c["w_progress"]])
    c["w_download_selected"].click(download_selected, [c["w_results"], c["w_selected"]], dl_outs,
                                   api_name="download_selected", show_progress_on=[c["w_progress"]])

    @owner_only(ctx, "stop downloads")
    def stop(request: gr.Request):
        token = ctx.downloads.get(f"session:{request.session_hash}")
        if token is None:
            return "Nothing is downloading."
        token.set()
        return "**Stopping…**"

    # queue=False: a Stop must not wait behind the download it stops.
    c["w_stop"].click(stop, None, [c["w_download_status"]], api_name="stop_download", queue=False)
