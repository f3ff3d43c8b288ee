"""The web app: assembles the four tabs and launches them. Wiring only; the work is in the core.

Who may do what is :mod:`tl_app.access`'s decision, enforced in every handler
(:func:`tl_app.ui.adapters.owner_only`) and, for what Gradio serves by itself, in
the front door (:mod:`tl_app.ui.guard`). A visitor's page shows only Classify and
the model card; owners see every tab.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

import gradio as gr

from .. import config, zerogpu
from ..access import LOCAL, SPACE, Access, Allowance, check_serving, is_loopback_host, names_from
from ..features import freeze_loaded_objects, keep_freed_memory
from ..project import Project
from ..search import RateLimiter, SearchProvider
from ..storage import keep_data_warning
from .adapters import UIContext, for_anyone
from .classify_tab import create_classify_tab
from .guard import Guard, login_note
from .programs import ProgramsApi
from .review_tab import SHORTCUTS, create_review_tab
from .search_tab import create_search_tab
from .train_tab import create_train_tab

TITLE = "tl_app: an image classifier without code"


def owner_warnings(ctx: UIContext) -> list[str]:
    """Warnings only owners see under the page's header (Markdown paragraphs).

    What the owner must act on and visitors need not know: on a Space, a project
    folder on the Space's own disk, which a restart wipes (:mod:`tl_app.storage`).
    """
    warning = keep_data_warning(ctx.project.root)
    return [warning] if warning else []


def _owner_header(ctx: UIContext, user: str | None = None) -> str:
    """What an owner reads under the title: where the project is, who is logged in, and warnings."""
    where = f"Project: `{ctx.project.root}`"
    if user and ctx.access.logins and not ctx.access.hf_signin:
        where = f"Logged in as **{user}**.  \n" + where
    return "\n\n".join([where, *owner_warnings(ctx)])


def _visitor_header(ctx: UIContext, user: str | None = None) -> str:
    """What a visitor reads under the title: what they may do here, and how an owner gets in."""
    text = ("You are visiting this app: drop pictures below to see what its model makes of them; “About this "
            "model” says what it learned from and how well it does. Only the app's owner can change its pictures "
            "or train it.")
    if user:
        text += f" You are signed in as **{user}**, who is not one of its owners."
    elif ctx.access.hf_signin:
        text += " If this app is yours, sign in with Hugging Face."
    return text


def build_demo(project_dir: str | Path, *, shared: bool = False, access: Access | None = None,
               search_provider: SearchProvider | None = None) -> gr.Blocks:
    """The Gradio app for one project folder (created if missing).

    ``access`` says who the owners are (default: single-user, or nobody when
    ``shared``). ``search_provider`` answers every web search (e.g. recorded
    results); by default each search asks ddgs with the engine the visitor
    chose. A shared app limits searches and classified pictures per visitor.
    """
    project = Project.open(project_dir, create=True)
    access = access if access is not None else Access(shared=shared)
    ctx = UIContext(project=project, shared=shared, access=access, search_provider=search_provider,
                    search_limiter=RateLimiter() if shared else None,
                    classify_allowance=Allowance(config.SHARED_CLASSIFY_LIMIT, config.SHARED_CLASSIFY_WINDOW,
                                                 what="pictures classified") if shared else None)
    everyone = access.everyone_owner
    with gr.Blocks(title=TITLE, delete_cache=(3600, 24 * 3600)) as demo:
        with gr.Row(equal_height=False):
            gr.Markdown(f"## {TITLE}", elem_id="app-title")
            if access.hf_signin:  # shown only where it works (see hf_signin_mode)
                gr.LoginButton(size="sm", scale=0, min_width=240, elem_id="hf-signin")
            elif access.logins:  # the app's own login (TL_AUTH): every page is a logged-in owner's
                gr.Button("Log out", link="/logout", size="sm", scale=0, min_width=100, elem_id="log-out")
        header = gr.Markdown(_owner_header(ctx) if everyone else "", elem_id="page-header")
        # Tabs that do not fit a narrow screen wrap onto a second line: each stays a labelled tab
        # (the default overflow menu hides them behind an unlabelled "..." button). Where some
        # people are visitors, the owner's tabs appear once the page knows who is looking.
        with gr.Tabs(overflow_behavior="wrap", selected=None if everyone else "classify") as tabs:
            with gr.Tab("Search & download", id="search", visible=everyone) as t_search:
                search = create_search_tab(ctx)
            with gr.Tab("Review", id="review", visible=everyone) as t_review:
                review = create_review_tab(ctx)
            with gr.Tab("Train", id="train", visible=everyone) as t_train:
                train = create_train_tab(ctx)
            with gr.Tab("Classify", id="classify") as t_classify:
                classify = create_classify_tab(ctx)
        # Each tab shows the project as it is now when it is opened.
        for tab, comps in ((t_search, search), (t_review, review), (t_train, train), (t_classify, classify)):
            fn, inputs, outputs = comps["on_select"]
            event = tab.select(fn, inputs, outputs, api_visibility="private", **comps.get("select_opts", {}))
            if "then" in comps:  # the Train tab then follows a training that is running (a reload, a second tab)
                fn, inputs, outputs, opts = comps["then"]
                event.then(fn, inputs, outputs, api_visibility="private", **opts)
        # Choices are fixed when the app is built; a page (re)load fetches the current classes.
        demo.load(*search["on_select"], api_visibility="private")
        demo.load(*train["on_load"], api_visibility="private")
        # The model card, fresh on every page load; also the visitors' endpoint for it.
        demo.load(*classify["on_select"], api_name="model_card")
        if "on_load" in classify["picture"]:  # "Add to the dataset" for owners, where some people are visitors
            demo.load(*classify["picture"]["on_load"], api_visibility="private")

        if not access.single_user:
            @for_anyone
            def page_for(request: gr.Request):
                """The page for the person looking: the owner's tabs and header, or a visitor's welcome."""
                visitor = ctx.visitor(request)
                if everyone:  # every page is an owner's: only the header names who is logged in
                    return gr.skip(), gr.skip(), gr.skip(), gr.skip(), _owner_header(ctx, visitor.user)
                owner = visitor.is_owner
                return (gr.Tab(visible=owner), gr.Tab(visible=owner), gr.Tab(visible=owner),
                        gr.Tabs(selected="search" if owner else "classify"),
                        _owner_header(ctx, visitor.user) if owner else _visitor_header(ctx, visitor.user))

            demo.load(page_for, None, [t_search, t_review, t_train, tabs, header], api_visibility="private")
    demo.tl_context = ctx  # for tests and launch()
    return demo


def hf_signin_mode(host: str, *, shared: bool, login: bool,
                   env: Mapping[str, str] | None = None) -> tuple[Optional[str], str]:
    """Where "Sign in with Hugging Face" can work: ``(SPACE, "")``, ``(LOCAL, "")`` or ``(None, why not)``.

    On a Space it needs ``hf_oauth: true`` in the README's front matter (the Space then
    sets ``OAUTH_CLIENT_ID``). Elsewhere Gradio only mocks it, signing every click in as
    this computer's Hugging Face user: it is offered for trying owners out (``TL_OWNERS``),
    on 127.0.0.1 only, with a Hugging Face token and the Hub reachable (the mock asks it
    at start and fails without them). ``why not`` is '' when nobody asked for it.
    """
    env = os.environ if env is None else env
    if env.get("SYSTEM") == "spaces" and env.get("SPACE_ID"):
        if env.get("OAUTH_CLIENT_ID"):
            return SPACE, ""
        return None, ("“Sign in with Hugging Face” is off: add `hf_oauth: true` to the front matter of the Space's "
                      "README so that its owners can sign in.")
    if not names_from(env.get("TL_OWNERS")) or not (shared or login):
        return None, ""
    off = "“Sign in with Hugging Face” (TL_OWNERS) is off here: "
    if not is_loopback_host(host):
        return None, off + ("outside a Space, Gradio signs every click in as this computer's Hugging Face user, so it "
                            "is offered on 127.0.0.1 only. Use TL_AUTH=user:password for owners on a network.")
    if config.env_flag("TL_OFFLINE") or config.env_flag("HF_HUB_OFFLINE"):
        return None, off + "the app is offline (TL_OFFLINE or HF_HUB_OFFLINE)."
    try:
        import huggingface_hub

        if huggingface_hub.get_token() is None:
            return None, off + "there is no Hugging Face token on this computer (`hf auth login`)."
        huggingface_hub.whoami()
    except Exception:  # noqa: BLE001 - the Hub unreachable or the token refused: no button rather than a crash
        return None, off + "the Hugging Face Hub could not be asked who this computer's token belongs to."
    return LOCAL, ""


def launch(project_dir: str | Path, *, host: str | None = None, port: int = config.DEFAULT_PORT,
           share_mode: bool = False, block: bool = True) -> gr.Blocks:
    """Build and serve the app; ``share_mode`` applies the settings for a public server.

    Raises :class:`tl_app.errors.ServeRefused` for a network address without ``--shared``
    or a login (``TL_AUTH``).
    """
    host = host or config.default_host()
    shared = share_mode or bool(os.environ.get("SPACE_ID"))
    auth = _auth_from_env()
    check_serving(host, shared=shared, login=bool(auth))
    signin, why_not = hf_signin_mode(host, shared=shared, login=bool(auth))
    access = Access.from_env(shared=shared, host=host, logins=[u for u, _ in auth or []], hf_signin=signin)
    demo = build_demo(project_dir, shared=shared, access=access)
    ctx: UIContext = demo.tl_context
    keep_freed_memory()  # a served picture's forward reuses the last one's memory (no fresh pages from the kernel)
    freeze_loaded_objects()  # the page and the modules stay for the server's life: out of the collector's passes
    on_zerogpu = zerogpu.prepare()  # spaces reports its GPU functions when the server starts
    # On ZeroGPU Gradio caps an unsized queue at one event, which refuses a page's own load events as "busy".
    demo.queue(default_concurrency_limit=2, max_size=64 if shared or zerogpu.on_zerogpu() else None)
    who = ("single user: whoever opens the page owns it" if access.single_user
           else "owners log in (TL_AUTH)" if auth and not signin
           else "visitors classify; owners sign in with Hugging Face" if signin
           else "visitors may only classify (no owner can sign in on the page)")
    print(f"tl_app is running at http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}  "
          f"(project: {ctx.project.root}; {who})", flush=True)
    if why_not:
        print(why_not, flush=True)
    if on_zerogpu:
        print("ZeroGPU: each training borrows a GPU (Hugging Face counts its time against the quota of whoever "
              "presses Train).", flush=True)
    demo.launch(server_name=host, server_port=port, footer_links=["api"] if not shared else [], quiet=True,
                prevent_thread_lock=not block, auth=auth, **launch_options(demo))
    return demo


def launch_options(demo: gr.Blocks) -> dict:
    """The ``launch()`` settings every way of serving the app shares (the tests' server too).

    The front door (:class:`tl_app.ui.guard.Guard`) goes in as a middleware of the FastAPI
    app Gradio builds. Python serves the page itself (no server-side rendering through
    Node), so that every request passes the front door. Inside it, the endpoint for programs
    (:mod:`tl_app.ui.programs`).
    """
    from starlette.middleware import Middleware

    ctx: UIContext = demo.tl_context
    return {"max_file_size": "50mb", "allowed_paths": [str(ctx.project.thumbs_dir)], "show_error": not ctx.shared,
            "head": _shortcuts_script(), "ssr_mode": False, "auth_message": login_note(),
            "app_kwargs": {"middleware": [Middleware(Guard, ctx=ctx), Middleware(ProgramsApi, ctx=ctx)]}}


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


def _auth_from_env() -> list[tuple[str, str]] | None:
    """``TL_AUTH="user:password"`` puts a login in front of the app; its user is an owner."""
    spec = os.environ.get("TL_AUTH", "")
    if ":" in spec:
        user, pw = spec.split(":", 1)
        if user.strip() and pw:
            return [(user.strip(), pw)]
    return None
