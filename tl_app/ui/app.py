"""The web app: assembles the four tabs and launches them. Wiring only; the work is in the core."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr

from .. import config
from ..project import Project
from ..search import RateLimiter, SearchProvider
from .adapters import UIContext
from .classify_tab import create_classify_tab
from .review_tab import SHORTCUTS, create_review_tab
from .search_tab import create_search_tab
from .train_tab import create_train_tab

TITLE = "tl_app: an image classifier without code"


def build_demo(project_dir: str | Path, *, shared: bool = False,
               search_provider: SearchProvider | None = None) -> gr.Blocks:
    """The Gradio app for one project folder (created if missing).

    ``search_provider`` answers every web search (e.g. recorded results);
    by default each search asks ddgs with the engine the visitor chose. A shared
    app limits searches per visitor.
    """
    project = Project.open(project_dir, create=True)
    ctx = UIContext(project=project, shared=shared, search_provider=search_provider,
                    search_limiter=RateLimiter() if shared else None)
    with gr.Blocks(title=TITLE, delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(f"## {TITLE}\nProject: `{project.root}`" if not shared else f"## {TITLE}")
        # Tabs that do not fit a narrow screen wrap onto a second line: each stays a labelled tab
        # (the default overflow menu hides them behind an unlabelled "..." button).
        with gr.Tabs(overflow_behavior="wrap"):
            with gr.Tab("Search & download", id="search") as t_search:
                search = create_search_tab(ctx)
            with gr.Tab("Review", id="review") as t_review:
                review = create_review_tab(ctx)
            with gr.Tab("Train", id="train") as t_train:
                train = create_train_tab(ctx)
            with gr.Tab("Classify", id="classify") as t_classify:
                classify = create_classify_tab(ctx)
        # Each tab shows the project as it is now when it is opened.
        for tab, comps in ((t_search, search), (t_review, review), (t_train, train), (t_classify, classify)):
            fn, inputs, outputs = comps["on_select"]
            event = tab.select(fn, inputs, outputs, api_visibility="private")
            if "then" in comps:  # the Train tab then follows a training that is running (a reload, a second tab)
                fn, inputs, outputs, opts = comps["then"]
                event.then(fn, inputs, outputs, api_visibility="private", **opts)
        # Choices are fixed when the app is built; a page (re)load fetches the current classes.
        demo.load(*search["on_select"], api_visibility="private")
    demo.tl_context = ctx  # for tests and launch()
    return demo


def launch(project_dir: str | Path, *, host: str = config.DEFAULT_HOST, port: int = config.DEFAULT_PORT,
           share_mode: bool = False, block: bool = True) -> gr.Blocks:
    """Build and serve the app; ``share_mode`` applies the settings for a public server."""
    shared = share_mode or bool(os.environ.get("SPACE_ID"))
    demo = build_demo(project_dir, shared=shared)
    ctx: UIContext = demo.tl_context
    demo.queue(default_concurrency_limit=2, max_size=64 if shared else None)
    print(f"tl_app is running at http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}  "
          f"(project: {ctx.project.root})", flush=True)
    demo.launch(server_name=host, server_port=port, footer_links=["api"] if not shared else [], quiet=True,
                prevent_thread_lock=not block, auth=_auth_from_env(), **launch_options(demo))
    return demo


def launch_options(demo: gr.Blocks) -> dict:
    """The ``launch()`` settings every way of serving the app shares (the tests' server too)."""
    ctx: UIContext = demo.tl_context
    return {"max_file_size": "50mb", "allowed_paths": [str(ctx.project.thumbs_dir)], "show_error": not ctx.shared,
            "head": _shortcuts_script()}


def _shortcuts_script() -> str:
    """Keyboard shortcuts: a key clicks a button by its elem_id while that button is on screen.

    Keys typed into a text field, or with Ctrl/Alt/Cmd held, are left alone.
    """
    keys = json.dumps(SHORTCUTS)
    return f"""<script>
document.addEventListener('keydown', (e) => {{
  const keys = {keys};
  const t = e.target;
  if (e.ctrlKey || e.altKey || e.metaKey || e.isComposing) return;
  if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;
  const id = keys[e.key.toLowerCase()];
  const el = id && document.getElementById(id);
  const button = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
  if (button && button.offsetParent !== null && !button.disabled) {{ e.preventDefault(); button.click(); }}
}});
</script>"""


def _auth_from_env():
    """``TL_AUTH="user:password"`` puts a login in front of the app (do this when it is public)."""
    spec = os.environ.get("TL_AUTH", "")
    if ":" in spec:
        user, pw = spec.split(":", 1)
        return (user, pw)
    return None
