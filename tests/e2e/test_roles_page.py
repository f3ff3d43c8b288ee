"""Owners and visitors in the browser: what each one's page shows, and that a visitor's page cannot act.

A shared app without a login gives visitors Classify and the model card only; the
requests their page can send to every other event are refused. An owner logs in
(TL_AUTH) and works as on their own computer. Pages at 390 px (a phone) and 1280 px.
"""

from __future__ import annotations

import re

import pytest

import imagegen
from harness import TABS, app_page, changes_nothing, serve
from tl_app.ui.adapters import FOR_OWNERS, handler_access

REFUSED = "Only the owner of this app may"

#: Sends events by number from inside the page, as its own script would: what each one answered.
_SEND_FROM_PAGE = """async (events) => {
  const answers = {};
  for (const e of events) {
    const session = Math.random().toString(36).slice(2, 13);
    const join = await fetch('gradio_api/queue/join', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({data: e.data, fn_index: e.id, session_hash: session, event_data: e.event, trigger_id: null})});
    if (!join.ok) { answers[e.id] = {http: join.status}; continue; }
    const stream = await fetch('gradio_api/queue/data?session_hash=' + session);
    const reader = stream.body.getReader();
    const decoder = new TextDecoder();
    let text = '', done = false;
    while (!done && !text.includes('process_completed')) {
      const part = await reader.read();
      done = part.done;
      text += decoder.decode(part.value || new Uint8Array(), {stream: !done});
    }
    reader.cancel();
    const messages = text.split('\\n').filter(l => l.startsWith('data:')).map(l => JSON.parse(l.slice(5)));
    const end = messages.find(m => m.msg === 'process_completed') || {none: text.slice(0, 200)};
    end.warnings = messages.filter(m => m.msg === 'log').map(m => m.log);
    answers[e.id] = end;
  }
  return answers;
}"""


def _page_events(page, srv) -> list[dict]:
    """Every owner-only event of the app, with the values a fresh page would send."""
    config = page.evaluate("async () => (await fetch('config')).json()")
    comps = {c["id"]: c for c in config["components"]}
    events = []
    for dep in config["dependencies"]:
        fn = srv.demo.fns[dep["id"]].fn
        if dep["backend_fn"] and handler_access(fn) == FOR_OWNERS:
            events.append({"id": dep["id"], "name": dep["api_name"], "quiet": fn.tl_quiet,
                           "data": [comps[i].get("props", {}).get("value") for i in dep["inputs"]],
                           "event": {"index": 0, "value": None, "selected": True} if dep["collects_event_data"]
                           else None})
    return events


@pytest.mark.parametrize("width", [1280, 390])
def test_a_visitor_gets_classify_and_the_model_card_and_their_page_cannot_act(browser, trained_project, tmp_path,
                                                                              width):
    project = trained_project
    before = sorted((it.id, it.label) for it in project.items())
    red = tmp_path / "a red thing.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=99).save(red)
    with serve(project.root, shared=True) as srv, app_page(browser, srv.url, width=width, visitor=True) as app:
        assert app.tab_names() == [TABS["classify"]]
        body = app.page.locator("body").inner_text()
        assert "You are visiting this app" in body and str(project.root) not in body
        card = app.text("model-card")
        assert re.search(r"\d+% right", card) and "Classes (2): blue, red." in card
        assert "from the owner's own files" in card
        assert "- blue: learned from" not in card and "blue: learned from" in card and "recall" in card
        assert app.hidden_columns("model-card-confusion") == []
        assert not app.page.locator("#classify-gallery").is_visible()  # no empty box before any picture
        app.screenshot(tmp_path / f"visitor-{width}.png")

        text = app.classify([red])
        assert "red" in text and "Prediction for a red thing.png" in text
        app.screenshot(tmp_path / f"visitor-classified-{width}.png")

        events = _page_events(app.page, srv)
        answers = app.page.evaluate(_SEND_FROM_PAGE, events)
        for e in events:
            # On the page a refusal changes nothing and says why in one warning (none for what the page
            # fires by itself: a page load, a tab opened).
            got = answers[str(e["id"])]
            assert got.get("success") is True, (e["name"], got)
            assert changes_nothing(got["output"]["data"]), (e["name"], got)
            if e["quiet"]:
                assert got["warnings"] == [], (e["name"], got)
            else:
                assert len(got["warnings"]) == 1 and got["warnings"][0].startswith(REFUSED), (e["name"], got)
        assert sorted((it.id, it.label) for it in project.items()) == before


@pytest.mark.parametrize("width", [1280, 390])
def test_an_owner_logs_in_and_works_on_a_shared_app(browser, tmp_path, colour_folder, width):
    reds = sorted((colour_folder / "red").glob("*.png"))[:4]
    with serve(tmp_path / "proj", shared=True, auth=[("ann", "pw-ann")]) as srv, \
            app_page(browser, srv.url, width=width, login=("ann", "pw-ann")) as app:
        assert app.tab_names() == list(TABS.values())
        assert f"Project: {srv.project.root}" in app.text("page-header")
        assert "Logged in as ann" in app.text("page-header")
        app.add_class("red")
        assert "4 imported" in app.add_pictures("red", reds)
        app.screenshot(tmp_path / f"owner-{width}.png")
        assert "1 selected" in app.toggle_picture(0)
        app.page.locator("#delete-selected").click()
        app.wait_text("pictures-status", "trash")
        assert len(srv.project.items()) == 3
        app.class_action("pictures-undo", "Undone")
        assert len(srv.project.items()) == 4
        app.tab("classify")
        assert "About this model" in app.page.locator("body").inner_text()
        app.page.locator("#log-out").click()
        app.page.get_by_label("username").wait_for()  # back on the login page
        assert "Login" in app.page.locator("body").inner_text()


def test_a_hugging_face_owner_signs_in_and_gets_the_owners_page(browser, tmp_path, hub_user):
    """"Sign in with Hugging Face" through Gradio's local stand-in (a Space's sign-in is the same button)."""
    from tl_app.access import LOCAL

    with serve(tmp_path / "p", shared=True, hf_signin=LOCAL, hf_owners=frozenset({"ann-hf"})) as srv, \
            app_page(browser, srv.url, visitor=True) as app:
        assert app.tab_names() == [TABS["classify"]]
        assert "If this app is yours, sign in with Hugging Face" in app.text("page-header")
        button = app.page.locator("#hf-signin")
        assert "Sign in with Hugging Face" in button.inner_text()
        app.screenshot(tmp_path / "signin-before.png")
        button.click()
        app.page.get_by_role("tab", name=TABS["search"]).wait_for(timeout=30_000)
        app.wait_idle()
        assert app.tab_names() == list(TABS.values())
        assert "ann-hf" in app.page.locator("#hf-signin").inner_text()
        app.add_class("red")
        assert srv.project.labels() == ["red"]
        app.screenshot(tmp_path / "signin-after.png")
