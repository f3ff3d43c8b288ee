"""Serve the app on loopback and drive it like a person would, in a real Chromium.

Shared by the browser tests (tests/e2e), the gradio_client tests and
``scripts/screenshots``, so the README's pictures come from the same clicks the
tests check. Playwright is imported only by the functions that need a browser.

Selectors use the ``elem_id`` values the tabs set, the names a person reads (tabs,
options) and, where a component offers no other handle, Gradio's ``data-testid``
attributes and Vega's ARIA labels (noted where they are used); never CSS class names
except the status tracker's ``hide``, which is the only idle signal there is.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

#: Chromium flags for a sandboxed, offline machine: no GPU, no background traffic.
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run"]

#: The tab names as the app shows them.
TABS = {"search": "Search & download", "review": "Review", "train": "Train", "classify": "Classify"}


def find_chromium() -> str | None:
    """Path of a Chromium Playwright can drive (``TL_CHROMIUM`` overrides), or None."""
    env = os.environ.get("TL_CHROMIUM")
    if env:
        return env if os.path.exists(env) else None
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(p):
            return p
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running app: its address, the Gradio demo and the project it serves."""

    url: str
    demo: object

    @property
    def project(self):
        return self.demo.tl_context.project


@contextlib.contextmanager
def serve(project_dir: str | Path, *, shared: bool = False, auth=None, **access) -> Iterator[Server]:
    """Serve the app for ``project_dir`` on a free loopback port, in this process, until the block ends.

    The launch options are the ones :func:`tl_app.ui.app.launch` uses; ``auth`` is
    Gradio's (``[(user, password), ...]``), as ``TL_AUTH`` gives it: its users are
    owners. ``access`` sets other fields of :class:`tl_app.access.Access` (``hf_owners``,
    ``hf_signin``, ``behind_proxy``). Training runs as a subprocess that inherits
    ``os.environ``, so set ``TORCH_HOME`` and friends before the first click.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from tl_app.access import Access
    from tl_app.ui.app import build_demo, launch_options

    rights = Access(shared=shared, logins=frozenset(u for u, _ in auth or []), **access)
    demo = build_demo(project_dir, shared=shared, access=rights)
    port = free_port()
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, auth=auth,
                **launch_options(demo))
    try:
        yield Server(f"http://127.0.0.1:{port}/", demo)
    finally:
        from tl_app.runner import stop_all

        with contextlib.suppress(Exception):  # never leave a training process behind
            stop_all(demo.tl_context.project)
        try:
            demo.close()
        except RuntimeError as e:
            # Gradio sets its asyncio stop event from this thread while its loop may be reading the event's
            # waiters ("deque mutated during iteration"): the event is set by then, so closing again goes on
            # to stop the server.
            if "mutated during iteration" not in str(e):
                raise
            demo.close()


def predict_http(url: str, picture: str | Path, *, client=None, headers: dict | None = None) -> dict:
    """One picture through the app's plain HTTP endpoint, as a program (or curl) calls it: upload
    the file, then ``POST /gradio_api/run/predict``. Returns the response's JSON (``data`` or ``error``)."""
    import httpx

    http = client or httpx.Client(headers=headers, timeout=60)
    base = url.rstrip("/")
    with open(picture, "rb") as fh:
        up = http.post(f"{base}/gradio_api/upload", files={"files": (Path(picture).name, fh)})
    up.raise_for_status()
    # A session of its own for this client, kept between calls (without one Gradio sets up a new
    # session, every component's state, for each call: about 10 ms here).
    session = getattr(http, "_tl_session", None) or f"tl-{os.urandom(6).hex()}"
    http._tl_session = session
    body = {"data": [{"path": up.json()[0], "orig_name": Path(picture).name, "meta": {"_type": "gradio.FileData"}}],
            "session_hash": session}
    return http.post(f"{base}/gradio_api/run/predict", json=body).json()


def predict_api(url: str, picture: str | Path, *, client=None, headers: dict | None = None):
    """One picture through the app's endpoint for programs (:mod:`tl_app.ui.programs`), as curl sends it:
    the file's bytes as the body of ``POST /api/predict?name=...``. Returns the HTTP response."""
    import httpx

    http = client or httpx.Client(headers=headers, timeout=60)
    return http.post(url.rstrip("/") + "/api/predict", params={"name": Path(picture).name},
                     content=Path(picture).read_bytes())


# --- the browser ---------------------------------------------------------------------
@contextlib.contextmanager
def chromium(executable: str | None = None):
    """A headless Chromium driven by Playwright (the system's browser; nothing is downloaded)."""
    from playwright.sync_api import sync_playwright

    exe = executable or find_chromium()
    if exe is None:
        raise RuntimeError("No Chromium found (install Debian's `chromium` or set TL_CHROMIUM).")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


_IDLE_JS = """() => ![...document.querySelectorAll('[data-testid="status-tracker"]')]
    .some(t => !t.classList.contains('hide') && !t.querySelector('.error, .validation-error'))"""


class AppPage:
    """The app in a browser tab, with the actions a person takes in it.

    Every action waits until the app shows its result, so a sequence of calls
    reads like the steps of a walkthrough.
    """

    def __init__(self, page, url: str, *, timeout_ms: float = 30_000):
        self.page = page
        self.url = url
        page.set_default_timeout(timeout_ms)

    # -- general --
    def open(self) -> "AppPage":
        self.page.goto(self.url)
        self.page.get_by_role("tab", name=TABS["search"]).wait_for()
        self.page.locator("#add-class").wait_for()
        self.wait_idle()
        return self

    def open_as_visitor(self) -> "AppPage":
        """Open the page a visitor of a shared app gets: Classify and the model card."""
        self.page.goto(self.url)
        self.page.get_by_role("tab", name=TABS["classify"]).wait_for()
        self.page.locator("#classify-files").wait_for()
        self.wait_idle()
        return self

    def log_in(self, user: str, password: str) -> "AppPage":
        """Fill in the login page (the app's own login, TL_AUTH) and wait for the app."""
        self.page.goto(self.url)
        self.page.get_by_label("username").fill(user)
        self.page.get_by_label("password").fill(password)
        self.page.get_by_role("button", name="Login").click()
        self.page.get_by_role("tab", name=TABS["search"]).wait_for()
        self.page.locator("#add-class").wait_for()
        self.wait_idle()
        return self

    def tab_names(self) -> list[str]:
        """The tabs the page shows, in order."""
        return [t.strip() for t in self.page.get_by_role("tab").all_inner_texts()]

    def reload(self) -> "AppPage":
        """Reload the page, as a person pressing F5 would; the app opens on its first tab again."""
        self.page.reload()
        self.page.get_by_role("tab", name=TABS["search"]).wait_for()
        self.page.locator("#add-class").wait_for()
        self.wait_idle()
        return self

    def tab(self, key: str) -> "AppPage":
        """Open a tab (``search``, ``review``, ``train`` or ``classify``) and wait for its refresh."""
        self.page.get_by_role("tab", name=TABS[key], exact=True).click()
        self.wait_idle()
        return self

    def wait_idle(self, timeout_ms: float = 30_000) -> None:
        """Wait until no event is pending (Gradio shows progress on the components it updates)."""
        # Each output has a status tracker (data-testid="status-tracker") that is hidden when idle and
        # shows a timer or progress while its event runs; an error leaves it showing "Error". There is no
        # public "idle" signal, so this is the one place that reads Gradio's markup.
        self.page.wait_for_timeout(150)
        self.page.wait_for_function(_IDLE_JS, timeout=timeout_ms)

    def text(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id}").inner_text()

    def wait_text(self, elem_id: str, pattern: str, timeout_ms: float = 30_000) -> str:
        """Wait until the component shows text matching the regular expression; return its text."""
        from playwright.sync_api import expect

        loc = self.page.locator(f"#{elem_id}")
        expect(loc).to_contain_text(re.compile(pattern), timeout=timeout_ms)
        return loc.inner_text()

    def plot_lines(self, elem_id: str) -> dict[str, str]:
        """The lines a LinePlot draws: {series: its first point's description}, drawn ones only.

        Reads the accessible SVG Vega renders (one ``aria-roledescription="line mark"``
        per series, labelled ``"x: ..; y: ..; color: .."``); a line without a stroke
        colour or with undefined values is not drawn and left out.
        """
        marks = self.page.locator(f"#{elem_id} [aria-roledescription='line mark']")
        lines = {}
        for m in marks.all():
            label, stroke = m.get_attribute("aria-label") or "", m.get_attribute("stroke")
            if stroke and "undefined" not in label:
                lines[label.rsplit(": ", 1)[-1]] = label
        return lines

    def hidden_columns(self, elem_id: str) -> list[str]:
        """The column headers of a table that are not in view (scrolled or cut off sideways); [] when all show."""
        return self.page.evaluate("""(id) => {
            const root = document.getElementById(id);
            if (!root) return ['(no element #' + id + ')'];
            const box = root.getBoundingClientRect();
            return [...root.querySelectorAll('th')]
                .filter(th => th.getBoundingClientRect().width > 0)
                .filter(th => { const r = th.getBoundingClientRect(); return r.left < box.left - 1 || r.right > box.right + 1; })
                .map(th => th.innerText.trim());
        }""", elem_id)

    def column_boxes(self, elem_id: str) -> dict:
        """Where a table and each of its column headers sit (to say why a column is out of view)."""
        return self.page.evaluate("""(id) => {
            const root = document.getElementById(id);
            if (!root) return {};
            const r = root.getBoundingClientRect();
            return {box: [Math.round(r.left), Math.round(r.right)], window: window.innerWidth,
                    columns: [...root.querySelectorAll('th')].map(th => {
                        const b = th.getBoundingClientRect();
                        return [th.innerText.trim(), Math.round(b.left), Math.round(b.right)]; })};
        }""", elem_id)

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def choose(self, elem_id: str, value: str) -> None:
        """Pick a value in a dropdown (typed and confirmed, as a keyboard user would)."""
        box = self.page.locator(f"#{elem_id} input")
        box.click()
        box.fill(str(value))
        option = self.page.get_by_role("option", name=str(value), exact=True)
        if option.count():
            option.first.click()
        else:  # a value typed into a dropdown that accepts new ones (Enter would pick the first option it starts)
            box.press("Tab")
        box.blur()
        self.wait_idle()

    def options(self, elem_id: str) -> list[str]:
        """The choices a dropdown offers when opened."""
        box = self.page.locator(f"#{elem_id} input")
        box.click()
        opts = self.page.get_by_role("option")
        opts.first.wait_for()
        names = [o.inner_text().replace("✓", "").strip() for o in opts.all()]  # the chosen one is ticked
        box.press("Escape")
        box.blur()
        return names

    def upload(self, elem_id: str, files: Sequence[str | Path], timeout_ms: float = 60_000) -> None:
        """Put files into a file drop area, as a drag-and-drop would, and wait until all are uploaded."""
        from playwright.sync_api import expect

        self.page.locator(f"#{elem_id} input[type=file]").set_input_files([str(f) for f in files])
        # An uploaded file is listed with a download link to its server copy.
        expect(self.page.locator(f"#{elem_id} [data-testid=download-link]")).to_have_count(len(files),
                                                                                           timeout=timeout_ms)

    # -- Search & download --
    def add_class(self, name: str) -> None:
        if not self.page.locator("#add-class").is_visible():
            self.tab("search")
        self.page.locator("#new-class textarea, #new-class input").first.fill(name)
        self.page.locator("#add-class").click()
        self.wait_idle()
        self.wait_text("classes-table", re.escape(name))

    def add_pictures(self, label: str, files: Sequence[str | Path], timeout_ms: float = 60_000) -> str:
        """Choose the class, drop the files and add them; returns the import summary."""
        self.choose("target-class", label)
        self.upload("upload-files", files, timeout_ms)
        self.page.locator("#add-files").click()
        self.wait_text("import-result", r"imported", timeout_ms)
        self.wait_idle()
        return self.text("import-result")

    def class_counts(self) -> dict[str, int]:
        """The "Your classes" table as {class: pictures}."""
        # The table's ARIA roles (grid, row, gridcell): its markup has a hidden sizing copy of the rows too.
        rows = self.page.locator("#classes-table [role=row]").all()
        out = {}
        for r in rows:
            cells = [c.inner_text().strip() for c in r.locator("[role=gridcell]").all()]
            if len(cells) >= 2 and cells[0]:
                out[cells[0]] = int(cells[1])
        return out

    def pick_classes(self, names: Sequence[str]) -> None:
        """Choose the classes to rename, merge or delete (the multiselect under "Rename, merge or delete")."""
        self.open_accordion("manage-classes")
        clear = self.page.locator("#manage-pick [role=button][title=Clear]")  # the box's own "Clear" button
        if clear.count() and clear.is_visible():
            clear.click()
            self.wait_idle()
        box = self.page.locator("#manage-pick input")
        for name in names:
            box.click()
            box.fill(name)
            self.page.get_by_role("option", name=name, exact=True).first.click()
        box.blur()
        self.wait_idle()

    def class_action(self, button: str, expect: str) -> str:
        """Click rename/merge/delete (``class-...``) or undo/redo (``pictures-...``) and wait for the status."""
        self.page.locator(f"#{button}").click()
        text = self.wait_text("pictures-status", expect)
        self.wait_idle()
        return text

    def browse_thumbs(self):
        """The pictures of the class shown under "Your pictures and classes", newest first."""
        return self.page.locator("#browse-gallery img")

    def toggle_picture(self, index: int) -> str:
        """Click a picture of the shown class to select or unselect it; returns the selection note."""
        from playwright.sync_api import expect

        note = self.page.locator("#browse-selection [data-testid=markdown]")
        before = note.inner_text()
        self.browse_thumbs().nth(index).click()
        expect(note).not_to_have_text(before)
        self.wait_idle()
        return note.inner_text()

    # -- Search the web --
    def search_web(self, classes: str, *, per_class: int | None = None, timeout_ms: float = 60_000) -> str:
        """Type the classes (``"centipede, millipede = millipede insect"``), click Search; returns what it found."""
        if not self.page.locator("#web-search").is_visible():
            self.tab("search")
        if per_class is not None:
            num = self.page.locator("#web-count input[type=number]")
            num.fill(str(per_class))
            num.press("Enter")
        self.page.locator("#web-classes textarea, #web-classes input").first.fill(classes)
        self.page.locator("#web-search").click()
        self.wait_idle(timeout_ms)
        return self.wait_text("web-search-status", r"found|refused|reached", timeout_ms)

    def web_results(self):
        """The found pictures in the preview gallery, in order."""
        return self.page.locator("#web-preview img")

    def toggle_web_result(self, index: int) -> str:
        """Click a found picture to select or unselect it; returns the selection note once it changed."""
        # The note's own text (data-testid="markdown"), without the timer Gradio may show beside it.
        note = self.page.locator("#web-selection [data-testid=markdown]")
        before = note.inner_text()
        self.web_results().nth(index).click()
        from playwright.sync_api import expect

        expect(note).not_to_have_text(before)
        self.wait_idle()
        return note.inner_text()

    def download_web(self, which: str = "all", timeout_ms: float = 120_000) -> str:
        """Click "Download all" (or "selected") and wait for the summary; returns it."""
        self.page.locator(f"#web-download-{which}").click()
        text = self.wait_text("web-download-status", r"Download (finished|stopped|ended)", timeout_ms)
        self.wait_idle(timeout_ms)
        return text

    # -- Train --
    def train(self, *, mode: str | None = None, size: int | None = None, epochs: int | None = None,
              pretrained: bool | None = None, lr: float | None = None, timeout_ms: float = 300_000) -> str:
        """Set the options, click Train and wait for the run to end; returns the status line.

        ``mode`` is ``"quick"`` or ``"full"``; left out, the tab's own proposal stands (quick until
        the project has a finished run). Epochs and learning rate live in the "Full fine-tuning
        options", opened when needed.
        """
        self.tab("train")
        if mode is not None:
            self.page.locator(f"#train-mode input[type=radio][value={mode}]").check()
            self.wait_idle()
        if pretrained is not None:
            self.page.locator("#train-pretrained input[type=checkbox]").set_checked(pretrained)
            self.wait_idle()
        if size is not None:
            self.choose("train-size", str(size))
        if epochs is not None or lr is not None:
            self.open_accordion("train-full-options")
        if epochs is not None:
            num = self.page.locator("#train-epochs input[type=number]")
            num.fill(str(epochs))
            num.press("Enter")
        if lr is not None:
            self.page.locator("#train-lr textarea, #train-lr input").first.fill(str(lr))
        # The status may still tell how the previous run ended: wait for another ending than that one.
        before = self.text("train-status").strip()
        self.page.locator("#train-button").click()
        return self.wait_train_end(before, timeout_ms)

    def wait_train_end(self, before: str = "", timeout_ms: float = 300_000) -> str:
        """Wait until the Train tab's status tells how a run ended (other than ``before``); return it."""
        ending = re.compile(r"^(?!Latest run).* (finished in|stopped\.|failed:)")
        deadline = time.time() + timeout_ms / 1000
        while True:
            text = self.text("train-status").strip()
            if text != before and ending.search(text):
                return text
            if time.time() > deadline:
                raise TimeoutError(f"no run ended within {timeout_ms / 1000:.0f} s; the status says: {text!r}")
            self.page.wait_for_timeout(200)

    def train_mode(self) -> str:
        """The training mode the Train tab has selected: ``quick`` or ``full``."""
        return self.page.locator("#train-mode input[type=radio]:checked").get_attribute("value")

    def suggest_lr(self, timeout_ms: float = 300_000) -> str:
        """Click "Suggest a learning rate" and wait for the suggestion; returns the learning-rate field."""
        self.tab("train")
        self.open_accordion("train-full-options")
        self.page.locator("#lr-find-button").click()
        self.wait_text("train-status", r"Suggested learning rate|No learning rate|search was stopped", timeout_ms)
        self.wait_idle()
        return self.learning_rate()

    def learning_rate(self) -> str:
        """What the learning-rate field holds (empty: the default)."""
        return self.page.locator("#train-lr textarea, #train-lr input").first.input_value()

    def open_accordion(self, elem_id: str) -> None:
        """Open a folded section (its header is a button; ``accordion-content`` is Gradio's test id)."""
        if not self.page.locator(f"#{elem_id} [data-testid=accordion-content]").is_visible():
            self.page.locator(f"#{elem_id} > button").first.click()
            self.page.locator(f"#{elem_id} [data-testid=accordion-content]").wait_for(state="visible")

    # -- Review --
    def review_thumbs(self):
        """The review gallery's pictures, most suspicious first."""
        return self.page.locator("#review-gallery img")

    def review_sources(self) -> list[str]:
        return [self.review_thumbs().nth(i).get_attribute("src") for i in range(self.review_thumbs().count())]

    def review_pick(self, index: int = 0) -> str:
        """Click a picture in the review gallery; returns the details the app shows about it."""
        self.review_thumbs().nth(index).click()
        return self.wait_text("review-details", r"Picture")

    def review_action(self, button: str, expect: str) -> str:
        """Click delete/undo/redo/keep/move and wait for the status to report it."""
        self.page.locator(f"#review-{button}").click()
        text = self.wait_text("review-status", expect)
        self.wait_idle()
        return text

    # -- Classify --
    def classify(self, files: Sequence[str | Path], timeout_ms: float = 60_000) -> str:
        """Drop pictures to classify; returns the text of the prediction (labels and percentages)."""
        self.tab("classify")
        self.upload("classify-files", files)
        self.wait_idle(timeout_ms)  # the upload starts the classification
        return self.wait_text("classify-label", r"\d+%", timeout_ms)


@contextlib.contextmanager
def app_page(browser, url: str, *, width: int = 1280, height: int = 900, visitor: bool = False,
             login: tuple[str, str] | None = None) -> Iterator[AppPage]:
    """A fresh browser page on the app, opened and ready: the owner's (after ``login`` if given) or a visitor's."""
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = AppPage(context.new_page(), url)
        if login:
            yield page.log_in(*login)
        else:
            yield page.open_as_visitor() if visitor else page.open()
    finally:
        context.close()


def wait_until(fn, timeout: float = 30.0, interval: float = 0.1):
    """Poll ``fn`` until it returns something truthy; return that."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > end:
            return v
        time.sleep(interval)


def changes_nothing(output) -> bool:
    """Whether an event's output is "no change" for every component (an HTML box's carries its own
    empty props update beside the usual one)."""
    nothing = ({"__type__": "update"}, {"props": {"__type__": "update"}, "__type__": "update"}, None)
    return all(x in nothing for x in output)
