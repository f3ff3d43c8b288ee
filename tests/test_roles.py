"""Owners and visitors of the served app, through gradio_client and raw HTTP as a stranger would send it.

The app runs in this process on a free loopback port (``e2e/harness.py``). A shared
app without a login has only visitors: every endpoint that changes the project or
costs the owner compute must refuse them, whatever way it is called (a public
endpoint, or a page event by its number); a logged-in owner (``TL_AUTH``, or a
Hugging Face user through Gradio's sign-in) may do all of it. All traffic goes to
127.0.0.1; Host, Origin and X-Forwarded-For headers are written by hand.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import imagegen
from e2e.harness import changes_nothing, predict_api, predict_http, serve, wait_until
from tl_app import runs
from tl_app.access import LOCAL
from tl_app.importer import import_files
from tl_app.ui.adapters import FOR_ANYONE, FOR_OWNERS, handler_access
from tl_app.ui.app import build_demo
from tl_app.ui.review_tab import ALL

REFUSED = "Only the owner of this app may"
#: Everything a visitor may call: classify (one picture or many, and why), the model card, and the page's own workings.
VISITOR_SAFE = {"classify", "model_card", "select", "refresh_3", "page_for", "fit_columns", "_check_login_status",
                "classify_many", "explain", "show_first", "show_picked",
                "pick_table_row", "predict"}


def _client(url: str, **kw) -> Client:
    return Client(url, verbose=False, download_files=False, **kw)


def _error(call) -> str:
    with pytest.raises(AppError) as ei:
        call()
    return str(ei.value)


def _config(url: str, **kw) -> dict:
    return httpx.get(url + "config", timeout=30, **kw).json()


def send_event(url: str, fn_index: int, data: list, *, api: bool = True, headers: dict | None = None,
               event_data: dict | None = None, timeout: float = 120) -> dict:
    """One event sent by its number, as the page does (queue/join, then the event stream): its last message.

    ``api`` marks it as gradio_client marks its requests; without it, it reads as the page's own.
    """
    session = uuid.uuid4().hex[:12]
    head = {"x-gradio-user": "api"} if api else {}
    head.update(headers or {})
    with httpx.Client(base_url=url, headers=head, timeout=timeout) as c:
        r = c.post("gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                   "event_data": event_data, "trigger_id": None})
        if r.status_code != 200:
            return {"http": r.status_code, "text": r.text}
        with c.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as s:
            for line in s.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        return msg
    return {}


def default_inputs(config: dict, dep: dict) -> list:
    """The values a fresh page would send for an event's inputs."""
    comps = {c["id"]: c for c in config["components"]}
    return [comps[i].get("props", {}).get("value") for i in dep["inputs"]]


def project_state(project) -> dict:
    """What a visitor must not change: pictures (and their classes), classes, trash, history, runs, model in use."""
    active = runs.active_run(project)
    weights = project.root / "models" / "weights"
    return {"items": sorted((it.id, it.label) for it in project.items()),
            "deleted": sorted(it.id for it in project.items(status="deleted")),
            "labels": project.labels(), "history": [a.id for a in project.history()],
            "kept": sorted(project.kept()), "runs": [r.id for r in runs.list_runs(project)],
            "active": active.id if active else None,
            "weights": sorted(p.name for p in weights.iterdir()) if weights.exists() else []}


# --- every endpoint is declared ----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["single-user", "shared", "shared with sign-in"])
def test_every_event_of_the_app_is_declared_for_owners_or_for_anyone(tmp_path, how, request):
    """A future endpoint cannot slip through: each one is owner-only or on the short list of visitor-safe ones."""
    from tl_app.access import Access

    if how == "shared with sign-in":
        request.getfixturevalue("hub_user")  # Gradio asks the Hub who signs in when the page is built
    access = {"single-user": Access(), "shared": Access(shared=True),
              "shared with sign-in": Access(shared=True, hf_signin=LOCAL, hf_owners=frozenset({"ann"}))}[how]
    demo = build_demo(tmp_path / "p", shared=access.shared, access=access)
    undeclared, anyone = [], set()
    for fn in demo.fns.values():
        who = handler_access(fn.fn)
        name = fn.api_name or getattr(fn.fn, "__name__", "?")
        if who is None:
            undeclared.append(name)
        elif who == FOR_ANYONE and fn.fn is not None:
            anyone.add(name if fn.api_name else fn.fn.__name__)
        else:
            assert who in (FOR_OWNERS, FOR_ANYONE)
    assert undeclared == [], f"events declared neither for owners nor for anyone: {undeclared}"
    assert anyone <= VISITOR_SAFE, f"new visitor-safe events, check them and add them here: {anyone - VISITOR_SAFE}"
    assert {"classify", "model_card"} <= anyone
    assert ("_check_login_status" in anyone) == (how == "shared with sign-in")


def test_the_api_description_lists_only_declared_endpoints(tmp_path):
    with serve(tmp_path / "p", shared=True) as srv:
        named = _client(srv.url).view_api(return_format="dict", print_info=False)["named_endpoints"]
        by_name = {f"/{fn.api_name}": fn for fn in srv.demo.fns.values() if fn.api_name}
        assert set(named) <= set(by_name)
        for name in named:
            who = handler_access(by_name[name].fn)
            assert who == FOR_OWNERS or (who == FOR_ANYONE and name.strip("/") in VISITOR_SAFE), name


# --- a visitor is refused -----------------------------------------------------------------------------
def test_a_visitor_of_a_shared_app_is_refused_every_endpoint_that_acts(trained_project, tmp_path, fake_pretrained):
    """Through gradio_client with real arguments, and every page event by its number: refused, nothing changes."""
    project = trained_project
    item = project.items()[0]
    before = project_state(project)
    weights = tmp_path / "w.pth"
    weights.write_bytes(fake_pretrained.read_bytes())
    picture = imagegen.class_folder(tmp_path / "new", per_class=2)
    pics = sorted(picture.rglob("*.png"))
    with serve(project.root, shared=True) as srv:
        v = _client(srv.url)
        calls = {
            "/add_class": ("wasp",), "/plan_files": ([handle_file(pics[0])], "red", False),
            "/add_files": ("red", [handle_file(p) for p in pics]), "/browse": (item.label,),
            "/move_pictures": (item.id, "blue", item.label), "/delete_pictures": (item.id, item.label),
            "/rename_class": ([item.label], "crimson", item.label), "/merge_classes": (project.labels(), "all", None),
            "/delete_classes": ([item.label], None), "/undo_pictures": (None,), "/redo_pictures": (None,),
            "/search_web": None, "/download_all": (), "/download_selected": ("0",), "/stop_download": (),
            "/stop_import": (), "/stop_export": (), "/stop_zip": (), "/stop_review": (),
            "/review": (ALL, "", ""), "/delete": (item.id, ALL, "", ""), "/relabel": (item.id, "blue", ALL, "", ""),
            "/relabel_to_prediction": (item.id, ALL, "", ""), "/keep": (item.id, ALL, "", ""),
            "/undo": (ALL, "", ""), "/redo": (ALL, "", ""),
            "/keep_one": (f"{item.id},{project.items()[1].id}", item.id, ALL, "", ""),
            "/retrain": (ALL, "", ""), "/stop": (),
            "/use_run": (runs.list_runs(project)[0].id,),
            "/export_bundle": (runs.list_runs(project)[0].id,), "/export_space": (None,),
            "/add_to_dataset": (handle_file(pics[0]), "0.png", "wasp"), "/undo_add": (),
        }
        for name, args in calls.items():
            if args is None:
                continue
            msg = _error(lambda: v.predict(*args, api_name=name))
            assert msg.startswith(REFUSED), (name, msg)
        msg = _error(lambda: v.predict(classes="wasp", api_name="/search_web"))
        assert msg.startswith(REFUSED + " search the web")
        for name, kw in (("/train", dict(mode="full", epochs=20, size=64, pretrained=False)),
                         ("/train_cpu", dict(mode="full", epochs=20, size=64, pretrained=False)),
                         ("/train", dict(mode="quick", size=64, weights=handle_file(weights))),
                         ("/lr_find", dict(size=64, pretrained=False))):
            msg = _error(lambda: v.predict(api_name=name, **kw))
            assert msg.startswith(REFUSED), (name, msg)

        # Every event by its number, private ones included (the page's own requests, sent by a program).
        config = _config(srv.url)
        owners = [d for d in config["dependencies"]
                  if d["backend_fn"] and handler_access(srv.demo.fns[d["id"]].fn) == FOR_OWNERS]
        assert len(owners) > 50
        for dep in owners:
            click = {"index": 0, "value": None, "selected": True} if dep["collects_event_data"] else None
            out = send_event(srv.url, dep["id"], default_inputs(config, dep), event_data=click)
            assert out.get("success") is False, (dep["api_name"], out)
            assert out["output"]["error"].startswith(REFUSED), (dep["api_name"], out)
        # The events a visitor's page fires by itself (a load, a tab) answer nothing, without a message.
        for name in ("refresh", "refresh_1", "refresh_2", "watch", "mode_now"):
            dep = next(d for d in config["dependencies"] if d["api_name"] == name)
            out = send_event(srv.url, dep["id"], default_inputs(config, dep), api=False)
            assert out.get("success") is True, (name, out)
            assert changes_nothing(out["output"]["data"]), (name, out["output"]["data"])

        time.sleep(0.5)  # anything a refused call had started would show by now
        assert project_state(project) == before
        assert runs.list_runs(project)[0].status == "finished"  # no training started

        # What a visitor may do: classify, and read the model card.
        note, label, gallery, errors = v.predict([handle_file(p) for p in pics], api_name="/classify")
        assert len(gallery) == 4 and errors == "" and label["label"].startswith("Prediction for 0.png")
        assert {c["label"] for c in label["value"]["confidences"]} == {"red", "blue"}
        text, confusion = v.predict(api_name="/model_card")[1:]
        assert "right** on" in text and "held-out pictures" in text and "Classes (2):" in text
        assert "from the owner's own files" in text
        for name in project.labels():
            assert f"- **{name}**: learned from " in text and "precision" in text and "recall" in text
        assert [r[0] for r in confusion["data"]] == sorted(project.labels())
        assert str(project.root) not in json.dumps([note, text, confusion])
        # Many at once, and why: yes. A folder of the server: not even offered on a shared app.
        summary, table = v.predict([handle_file(p) for p in pics], api_name="/classify_many")[:2]
        assert summary.startswith("Classified 4 pictures") and len(table["data"]) == 4
        assert "Where the model looked" in v.predict(handle_file(pics[0]), "0.png", api_name="/explain")["label"]
        assert "/classify_folder" not in v.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert project_state(project) == before


def test_a_visitors_pictures_to_classify_are_limited_by_address(trained_project, tmp_path):
    from tl_app.access import Allowance

    pics = sorted(imagegen.class_folder(tmp_path / "new", per_class=2).rglob("*.png"))
    with serve(trained_project.root, shared=True, behind_proxy=True) as srv:
        srv.demo.tl_context.classify_allowance = Allowance(limit=5, window=600, what="pictures classified")

        def visitor(address):
            return _client(srv.url, headers={"X-Forwarded-For": address})

        assert len(visitor("203.0.113.5").predict([handle_file(p) for p in pics], api_name="/classify")[2]) == 4
        msg = _error(lambda: visitor("203.0.113.5").predict([handle_file(p) for p in pics[:2]], api_name="/classify"))
        assert "allows 5 pictures classified per visitor every 10 minutes; try again in" in msg
        assert len(visitor("203.0.113.5").predict([handle_file(pics[0])], api_name="/classify")[2]) == 1
        assert len(visitor("198.51.100.7").predict([handle_file(p) for p in pics], api_name="/classify")[2]) == 4
        # The plain HTTP endpoint counts in the same allowance.
        other = {"X-Forwarded-For": "198.51.100.7"}
        assert predict_http(srv.url, pics[0], headers=other)["data"][0]["label"] in ("red", "blue")
        refused = predict_http(srv.url, pics[1], headers=other)
        assert "data" not in refused and "allows 5 pictures classified per visitor" in str(refused.get("error"))
        # So does the endpoint for programs (one request, the picture as its body).
        third = {"X-Forwarded-For": "192.0.2.9"}
        for p in pics:
            r = predict_api(srv.url, p, headers=third)
            assert r.status_code == 200 and r.json()["label"] in ("red", "blue")
        assert predict_api(srv.url, pics[0], headers=third).status_code == 200
        r = predict_api(srv.url, pics[1], headers=third)
        assert r.status_code == 429 and "allows 5 pictures classified per visitor" in r.json()["error"]


# --- an owner may do it all ------------------------------------------------------------------------------
def test_a_logged_in_owner_of_a_shared_app_may_do_everything(trained_project, tmp_path, fake_pretrained):
    """TL_AUTH's user on a shared server: the endpoints a visitor is refused work, one after the other."""
    project = trained_project
    pics = sorted(imagegen.class_folder(tmp_path / "new", per_class=3, seed=7).rglob("*.png"))
    with serve(project.root, shared=True, auth=[("ann", "pw-ann")]) as srv:
        # Without logging in nothing is served at all.
        assert httpx.get(srv.url + "config").status_code == 401
        o = _client(srv.url, auth=("ann", "pw-ann"))
        labels = project.labels()
        n = len(project.items())
        assert o.predict("wasp", api_name="/add_class")[-1] == ""
        assert "wasp" in project.labels()
        plan = o.predict([handle_file(p) for p in pics], "wasp", False, api_name="/plan_files")[0]
        assert "6 pictures go into 'wasp'" in plan
        o.predict("wasp", [handle_file(p) for p in pics], api_name="/add_files")
        assert len(project.items()) == n + 6
        gallery = o.predict("wasp", api_name="/browse")[0]
        assert len(gallery) == 6
        wasps = [it.id for it in project.items(label="wasp")]
        o.predict(wasps[0], labels[0], "wasp", api_name="/move_pictures")
        assert project.item(wasps[0]).label == labels[0]
        o.predict(wasps[1], "wasp", api_name="/delete_pictures")
        assert project.item(wasps[1]).status == "deleted"
        o.predict("wasp", api_name="/undo_pictures")
        assert project.item(wasps[1]).status == "active"
        o.predict("wasp", api_name="/redo_pictures")
        o.predict(["wasp"], "hornet", "wasp", api_name="/rename_class")
        assert "hornet" in project.labels() and "wasp" not in project.labels()
        o.predict(["hornet"], None, api_name="/delete_classes")
        assert "hornet" not in project.labels()
        o.predict(None, api_name="/undo_pictures")
        o.predict(["hornet", labels[1]], labels[1], None, api_name="/merge_classes")
        assert "hornet" not in project.labels()

        out = o.predict(ALL, "", "", api_name="/review")
        assert out[0].startswith("Ranked with")
        first, second = project.items()[0], project.items()[1]
        o.predict(first.id, ALL, "", "", api_name="/delete")
        assert project.item(first.id).status == "deleted"
        o.predict(ALL, "", "", api_name="/undo")
        o.predict(second.id, labels[0] if second.label != labels[0] else labels[1], ALL, "", "", api_name="/relabel")
        assert project.item(second.id).label != second.label
        o.predict(second.id, ALL, "", "", api_name="/keep")
        assert second.id in project.kept()
        o.predict(ALL, "", "", api_name="/undo")
        o.predict(ALL, "", "", api_name="/redo")
        assert o.predict(api_name="/stop") == "Nothing is training."
        assert o.predict(api_name="/stop_download") == "Nothing is downloading."

        # Training costs compute: the owner's to spend.
        status = o.predict(mode="quick", size=64, api_name="/train")[0]
        assert "finished in" in status, status
        quick = runs.list_runs(project)[0]
        assert quick.mode == "quick" and quick.status == "finished"
        o.predict(runs.list_runs(project)[1].id, api_name="/use_run")
        assert runs.active_run(project).id == runs.list_runs(project)[1].id
        out = o.predict(ALL, "", "", api_name="/retrain")
        assert len(runs.list_runs(project)) == 3 and runs.list_runs(project)[0].status == "finished"
        assert any(str(x).startswith("Retrained: ") for x in out), out


# --- the front door ------------------------------------------------------------------------------------
def test_single_user_mode_serves_only_requests_addressed_to_this_computer(tmp_path):
    """DNS rebinding: a web page reaches 127.0.0.1 under a name of its own; the Host header gives it away."""
    with serve(tmp_path / "p") as srv:
        port = srv.url.rstrip("/").rsplit(":", 1)[1]
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "192.168.1.4"):
            for path in ("", "config", "gradio_api/info"):
                r = httpx.get(srv.url + path, headers={"Host": host})
                assert r.status_code == 403, (host, path, r.status_code)
                assert "serves only this computer" in r.text
            r = httpx.post(srv.url + "gradio_api/queue/join", headers={"Host": host}, json={})
            assert r.status_code == 403
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost:1", f"[::1]:{port}", "127.0.0.1"):
            assert httpx.get(srv.url + "config", headers={"Host": host}).status_code == 200, host
        assert _client(srv.url).predict("red", api_name="/add_class")[-1] == ""
    # A shared app answers any host name (its users reach it by a name of their own).
    with serve(tmp_path / "q", shared=True) as srv:
        assert httpx.get(srv.url + "config", headers={"Host": "my-space.example"}).status_code == 200


def _login(url: str, user: str, password: str, **headers) -> httpx.Response:
    return httpx.post(url + "login", data={"username": user, "password": password}, headers=headers)


def test_with_a_login_a_request_sent_by_another_site_is_refused(tmp_path):
    """Gradio answers any origin with credentials behind a real host name; the app does not."""
    with serve(tmp_path / "p", shared=True, auth=[("ann", "pw-ann")]) as srv:
        ok = _login(srv.url, "ann", "pw-ann")
        assert ok.status_code == 200
        cookies = {k: v for k, v in ok.cookies.items()}
        host = srv.url.split("//")[1].rstrip("/")
        config = httpx.get(srv.url + "config", cookies=cookies).json()
        dep = next(d for d in config["dependencies"] if d["api_name"] == "add_class")
        body = {"data": ["wasp"], "fn_index": dep["id"], "session_hash": "s" * 11, "event_data": None,
                "trigger_id": None}
        for headers in ({"Origin": "http://127.0.0.66:8000"}, {"Origin": "null"},
                        {"Origin": f"http://{host.split(':')[0]}:1"},
                        {"Referer": "http://127.0.0.66:8000/page.html"}):
            r = httpx.post(srv.url + "gradio_api/queue/join", json=body, cookies=cookies,
                           headers={"Host": "app.example", **headers})
            assert r.status_code == 403, (headers, r.status_code, r.text)
            assert "sent by another web site" in r.text
        # Reading the app from another site with the cookie is refused too (its config, its files).
        r = httpx.get(srv.url + "config", cookies=cookies, headers={"Origin": "http://127.0.0.66:8000"})
        assert r.status_code == 403
        # A login form posted by another site is refused before the password is looked at.
        r = _login(srv.url, "ann", "pw-ann", Origin="http://127.0.0.66:8000")
        assert r.status_code == 403
        assert srv.project.labels() == []
        # The endpoint for programs: another site is refused, and without a login so is anybody.
        red = tmp_path / "red.png"
        imagegen.noisy(imagegen.COLOURS["red"], seed=3).save(red)
        r = predict_api(srv.url, red, headers={"Origin": "http://127.0.0.66:8000"})
        assert r.status_code == 403 and "sent by another web site" in r.text
        r = predict_api(srv.url, red)
        assert r.status_code == 401 and "Log in" in r.json()["error"]
        with httpx.Client(cookies=cookies, timeout=60) as logged_in:  # logged in: on to the model (none yet)
            r = predict_api(srv.url, red, client=logged_in)
            assert r.status_code == 409 and "No trained model yet" in r.json()["error"]
        # The app's own page (same origin), and programs that send no Origin, are served.
        r = httpx.post(srv.url + "gradio_api/queue/join", json=body, cookies=cookies,
                       headers={"Origin": srv.url.rstrip("/"), "Referer": srv.url})
        assert r.status_code == 200, r.text
        assert wait_until(lambda: srv.project.labels() == ["wasp"], timeout=30)
        assert _client(srv.url, auth=("ann", "pw-ann")).predict("bee", api_name="/add_class")[-1] == ""


def test_wrong_passwords_are_slowed_down_per_address_and_user(tmp_path):
    with serve(tmp_path / "p", shared=True, auth=[("ann", "pw-ann"), ("bob", "pw-bob")], behind_proxy=True) as srv:
        here = {"X-Forwarded-For": "203.0.113.5"}
        # The first wait is 5 s here instead of 1 s: the checks below must come within it on a loaded machine.
        srv.demo.tl_context.login_throttle.base = 5.0
        for _ in range(5):
            assert _login(srv.url, "ann", "wrong", **here).status_code == 400
        assert _login(srv.url, "ann", "pw-ann", **here).status_code == 200  # five wrong tries are free
        for _ in range(6):
            r = _login(srv.url, "ann", "wrong", **here)
        assert r.status_code == 400
        # Now even the right password is refused unchecked, with the time to wait.
        r = _login(srv.url, "ann", "pw-ann", **here)
        assert r.status_code == 400 and "Too many wrong passwords" in r.json()["detail"], r.text
        assert "access-token" not in " ".join(r.headers.get_list("set-cookie"))
        # Another address, or another user from this one, is not slowed down.
        assert _login(srv.url, "ann", "pw-ann", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 200
        assert _login(srv.url, "bob", "pw-bob", **here).status_code == 200
        # The login page says so.
        assert "wrong passwords" in httpx.get(srv.url).text
        wait = srv.demo.tl_context.login_throttle.wait("203.0.113.5", "ann")
        time.sleep(wait + 0.1)
        assert _login(srv.url, "ann", "pw-ann", **here).status_code == 200


# --- what is served -------------------------------------------------------------------------------------
def test_thumbnails_of_trashed_pictures_are_not_served_whatever_the_url(tmp_path, colour_folder):
    with serve(tmp_path / "p") as srv:
        import_files(srv.project, [colour_folder])
        owner = _client(srv.url)
        gallery = owner.predict("red", api_name="/browse")[0]
        url = gallery[0]["image"]["url"]
        sha = Path(gallery[0]["image"]["path"]).name.split("-")[0]
        item = srv.project.find_sha(sha)
        direct = srv.url + "gradio_api/file=" + str(srv.project.thumbnail(item))
        trashed_file = srv.project.path_of(item)
        assert httpx.get(url).status_code == 200 and httpx.get(direct).status_code == 200

        owner.predict(item.id, "red", api_name="/delete_pictures")
        item = srv.project.item(item.id)
        assert item.status == "deleted"
        for guess in (url, direct, url.replace("/file=", "/file/"), srv.url + "gradio_api/file=" + str(
                srv.project.root / "trash" / Path(item.trash_file or "x").name),
                      srv.url + "gradio_api/file=" + str(trashed_file)):
            r = httpx.get(guess)
            assert r.status_code in (403, 404), (guess, r.status_code)
        owner.predict("red", api_name="/undo_pictures")
        assert httpx.get(url).status_code == 200  # back in the project, shown again


def test_a_visitor_gets_no_thumbnail_and_no_server_path(trained_project):
    item = trained_project.items()[0]
    with serve(trained_project.root, shared=True) as srv:
        thumb = srv.url + "gradio_api/file=" + str(trained_project.thumbnail(item))
        assert httpx.get(thumb).status_code == 404
        page = httpx.get(srv.url).text
        config = httpx.get(srv.url + "config").text
        assert str(trained_project.root) not in page and str(trained_project.root) not in config
    with serve(trained_project.root) as srv:  # on one's own computer the page says where the project is
        assert str(trained_project.root) in httpx.get(srv.url + "config").text
        assert httpx.get(srv.url + "gradio_api/file=" + str(trained_project.thumbnail(item))).status_code == 200


def test_review_says_where_a_picture_came_from_by_its_file_name_only(trained_project, tmp_path):
    from tl_app.ui.review_tab import _details

    row = {"item": "x", "name": "1.png", "label": "red", "predicted": "red", "confidence": 0.9, "reason": "label",
           "detail": "", "source": str(tmp_path / "secret" / "holiday" / "red" / "1.png")}
    text = _details([row], ["x"], "x")
    assert "**From:** 1.png" in text and "secret" not in text and str(tmp_path) not in text


# --- weights files ----------------------------------------------------------------------------------------
def test_an_uploaded_weights_file_stays_only_if_its_run_is_accepted(tmp_path, colour_folder, fake_pretrained):
    weights = tmp_path / "mine.pth"
    weights.write_bytes(fake_pretrained.read_bytes())
    other = tmp_path / "other.pth"
    import torch
    import torchvision

    torch.manual_seed(5)
    torch.save(torchvision.models.resnet18().state_dict(), other)
    with serve(tmp_path / "p") as srv:
        import_files(srv.project, [colour_folder])
        folder = srv.project.root / "models" / "weights"
        c = _client(srv.url)
        status = c.predict(mode="quick", size=64, weights=handle_file(weights), api_name="/train")[0]
        assert "finished in" in status and "Review and Classify use it now" in status, status
        first = runs.list_runs(srv.project)[0]
        kept = sorted(p.name for p in folder.glob("*.pth"))
        assert len(kept) == 1 and Path(first.config["weights"]).name == kept[0]

        # A full fine-tuning from the other file, stopped: not accepted, its file is removed.
        job = c.submit(mode="full", epochs=20, size=64, weights=handle_file(other), api_name="/train")
        assert wait_until(lambda: len(list(folder.glob("*.pth"))) == 2, timeout=60)
        run = wait_until(lambda: runs.list_runs(srv.project)[0].id != first.id and runs.list_runs(srv.project)[0],
                         timeout=60)
        assert wait_until(lambda: c.predict(api_name="/stop").startswith("Stopping"), timeout=60)
        job.result(timeout=180)
        assert runs.get_run(srv.project, run.id).status == "stopped"
        assert wait_until(lambda: sorted(p.name for p in folder.glob("*.pth")) == kept, timeout=30)
        # A refused start leaves nothing behind either.
        msg = _error(lambda: c.predict(mode="quick", size=8, weights=handle_file(other), api_name="/train"))
        assert "Image size" in msg and sorted(p.name for p in folder.glob("*.pth")) == kept


# --- Sign in with Hugging Face (Gradio's local stand-in for it) --------------------------------------------
def _sign_in(url: str) -> str:
    """Follow "Sign in with Hugging Face" as a browser would; the session cookie it leaves."""
    with httpx.Client(base_url=url, follow_redirects=False) as c:
        r = c.get("login/huggingface")
        while r.is_redirect and "/login/" in r.headers["location"]:
            r = c.get(r.headers["location"])
        return next(v for k, v in r.cookies.items() if k == "session")


def test_signed_in_hugging_face_owners_may_act_and_other_users_may_not(tmp_path, hub_user, monkeypatch):
    from tl_app.ui.app import hf_signin_mode

    monkeypatch.setenv("TL_OWNERS", "Ann-HF")
    assert hf_signin_mode("127.0.0.1", shared=True, login=False) == (LOCAL, "")
    mode, why = hf_signin_mode("0.0.0.0", shared=True, login=False)
    assert mode is None and "127.0.0.1 only" in why  # the stand-in signs anyone in: never on a network
    with serve(tmp_path / "p", shared=True, hf_signin=LOCAL, hf_owners=frozenset({"ann-hf"})) as srv:
        page = httpx.get(srv.url).text
        assert "Sign in with Hugging Face" in page
        stranger = _client(srv.url)
        msg = _error(lambda: stranger.predict("wasp", api_name="/add_class"))
        assert msg.startswith(REFUSED) and "sign in with Hugging Face" in msg
        owner = _client(srv.url, headers={"Cookie": f"session={_sign_in(srv.url)}"})
        assert owner.predict("wasp", api_name="/add_class")[-1] == "" and srv.project.labels() == ["wasp"]
    with serve(tmp_path / "q", shared=True, hf_signin=LOCAL, hf_owners=frozenset({"someone-else"})) as srv:
        signed_in = _client(srv.url, headers={"Cookie": f"session={_sign_in(srv.url)}"})
        assert _error(lambda: signed_in.predict("wasp", api_name="/add_class")).startswith(REFUSED)


def test_an_uploaded_zip_that_unpacks_too_far_is_refused_by_name(tmp_path):
    from test_access import _zip_bomb

    from tl_app import config

    bomb = _zip_bomb(tmp_path / "pets.zip", config.MAX_ZIP_TOTAL_BYTES // (1 << 20) + 20)
    with serve(tmp_path / "p", shared=True, auth=[("ann", "pw-ann")]) as srv:
        owner = _client(srv.url, auth=("ann", "pw-ann"))
        plan = owner.predict([handle_file(bomb)], "", False, api_name="/plan_files")[0]
        assert plan.startswith("pets.zip will be refused: it unpacks to") and "split it into smaller zip" in plan
        result = owner.predict("pets", [handle_file(bomb)], api_name="/add_files")[8]  # after the 8 views
        assert "`pets.zip`: it unpacks to" in result and "more than the 500 MB a zip file may hold" in result
        assert str(tmp_path) not in result and "/tmp/gradio" not in result
        assert srv.project.items() == []
