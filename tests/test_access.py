"""Roles and request checks in the core: who owns the app, what a visitor is told, and the front door's rules.

Plain functions and dataclasses (tl_app/access.py, tl_app/guard.py), tested without a server; the
served app is tested in test_roles.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import imagegen
from tl_app import config
from tl_app.access import LOCAL, OWNER, SPACE, VISITOR, Access, Allowance, Visitor, check_serving
from tl_app.errors import LimitReached, NotAllowed, ServeRefused
from tl_app.guard import LoginThrottle, client_address, local_host, same_site
from tl_app.importer import import_files, plan_import
from tl_app.models import settle_weights_file, store_weights_file
from tl_app.project import source_name

ROOT = Path(__file__).resolve().parent.parent


# --- who is an owner ------------------------------------------------------------------------------
def test_on_ones_own_computer_whoever_opens_the_page_is_the_owner():
    alone = Access(shared=False, loopback=True)
    assert alone.single_user and alone.everyone_owner
    assert alone.role_of() == OWNER


def test_a_shared_app_without_a_login_has_only_visitors():
    shared = Access(shared=True)
    assert not shared.single_user and not shared.everyone_owner
    assert shared.role_of() == VISITOR
    assert shared.role_of(login="ann") == VISITOR  # a name nobody logged in with counts for nothing
    with pytest.raises(NotAllowed) as e:
        shared.require_owner(Visitor(session="s1"), "delete pictures")
    assert str(e.value).startswith("Only the owner of this app may delete pictures.")
    assert "classify" in str(e.value) and "sign in" not in str(e.value)


def test_the_users_of_the_apps_own_login_are_owners():
    login = Access(shared=True, logins=frozenset({"ann"}))
    assert login.everyone_owner  # nobody reaches the page without logging in
    assert login.role_of(login="ann") == OWNER and login.role_of(login="bob") == VISITOR
    # A login on this computer is no longer single-user mode.
    assert not Access(shared=False, logins=frozenset({"ann"})).single_user


def test_on_a_space_the_author_and_the_listed_users_own_it_once_signed_in():
    env = {"SPACE_ID": "ann/classifier", "SPACE_AUTHOR_NAME": "Ann", "TL_OWNERS": "bob, Carol",
           "SPACE_HOST": "ann-classifier.hf.space"}
    a = Access.from_env(shared=True, host="0.0.0.0", hf_signin=SPACE, env=env)
    assert a.hf_owners == {"ann", "bob", "carol"} and a.behind_proxy
    assert a.public_hosts == ("ann-classifier.hf.space",) and not a.loopback
    assert a.role_of(hf_user="ann") == a.role_of(hf_user="CAROL") == OWNER
    assert a.role_of(hf_user="mallory") == a.role_of() == VISITOR
    assert not a.everyone_owner
    assert "sign in with Hugging Face" in a.refusal("train models")
    # Without sign-in (no hf_oauth in the front matter) a user name proves nothing.
    assert Access.from_env(shared=True, host="0.0.0.0", env=env).role_of(hf_user="ann") == VISITOR


def test_a_proxy_is_trusted_only_on_a_space_or_when_a_setting_says_so():
    assert not Access.from_env(shared=True, host="0.0.0.0", env={}).behind_proxy
    assert Access.from_env(shared=True, host="0.0.0.0", env={"TL_BEHIND_PROXY": "1"}).behind_proxy
    assert Access.from_env(shared=True, host="0.0.0.0", env={"SPACE_ID": "a/b"}).behind_proxy
    assert Access.from_env(shared=False, host="127.0.0.1", env={}).single_user
    assert Access.from_env(shared=False, host="localhost", env={}, hf_signin=LOCAL).single_user


# --- serving on the network ----------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "my-laptop.local"])
def test_serving_on_a_network_address_needs_shared_or_a_login(host):
    with pytest.raises(ServeRefused) as e:
        check_serving(host, shared=False, login=False)
    msg = str(e.value)
    assert host in msg and "--shared" in msg and "TL_AUTH=user:password" in msg and "127.0.0.1" in msg
    check_serving(host, shared=True, login=False)
    check_serving(host, shared=False, login=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_serving_this_computer_only_needs_nothing(host):
    check_serving(host, shared=False, login=False)


@pytest.mark.parametrize("how", [["--host", "0.0.0.0"], []])
def test_the_command_line_refuses_a_network_address_and_says_what_to_do(tmp_path, how):
    env = {**os.environ, "TL_HOST": "0.0.0.0", "PYTHONPATH": str(ROOT)}
    env.pop("TL_AUTH", None)
    env.pop("SPACE_ID", None)
    p = subprocess.run([sys.executable, "-m", "tl_app", "serve", "--project", str(tmp_path / "p"), *how],
                       capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert p.returncode == 1, p.stderr
    assert "Not serving on 0.0.0.0" in p.stderr and "--shared" in p.stderr and "TL_AUTH" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "p").exists()  # refused before anything was created


# --- the front door's rules ------------------------------------------------------------------------
def test_only_requests_addressed_to_this_computer_are_local():
    for host in ("localhost", "localhost:7860", "127.0.0.1:1234", "127.0.0.1", "[::1]:7860", "[::1]"):
        assert local_host(host), host
    for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example", "192.168.1.5:7860", "",
                 "localhost.evil.example", "[::ffff:8.8.8.8]"):
        assert not local_host(host), host


def test_same_site_compares_the_origin_with_the_apps_own_host():
    assert same_site("http://127.0.0.1:7860", ["127.0.0.1:7860"])
    assert same_site("https://127.0.0.5", ["127.0.0.5"])
    assert same_site("https://127.0.0.5/?x=1", ["127.0.0.5:443"])
    assert not same_site("http://127.0.0.1:9999", ["127.0.0.1:7860"])
    assert not same_site("https://127.0.0.66", ["127.0.0.5"])
    assert not same_site("http://127.0.0.5.nip.localhost", ["127.0.0.5"])
    assert not same_site("null", ["127.0.0.1:7860"]) and not same_site("", ["127.0.0.1:7860"])
    assert not same_site("file:///tmp/x.html", ["127.0.0.1:7860"])


def test_the_client_address_is_believed_from_a_trusted_proxy_only():
    assert client_address("10.0.0.9", "1.2.3.4", behind_proxy=False) == "10.0.0.9"
    assert client_address("10.0.0.9", "1.2.3.4", behind_proxy=True) == "1.2.3.4"
    # The proxy appends what it saw: whatever the visitor wrote in front is ignored,
    # and private hops of further proxies are skipped.
    assert client_address("10.0.0.9", "6.6.6.6, 1.2.3.4", behind_proxy=True) == "1.2.3.4"
    assert client_address("10.0.0.9", "6.6.6.6, 1.2.3.4, 10.1.2.3", behind_proxy=True) == "1.2.3.4"
    assert client_address("10.0.0.9", "[2001:db8::1]:443, 2a00:1450::5", behind_proxy=True) == "2a00:1450::5"
    assert client_address("10.0.0.9", "not an address", behind_proxy=True) == "10.0.0.9"
    assert client_address("10.0.0.9", None, behind_proxy=True) == "10.0.0.9"


def test_wrong_passwords_are_slowed_down_per_address_and_user():
    t = LoginThrottle(free=5, free_per_address=20)
    for i in range(5):
        assert t.wait("1.2.3.4", "ann", now=i) == 0
        t.failed("1.2.3.4", "ann", now=i)
    assert t.wait("1.2.3.4", "ann", now=5) == 0  # five wrong tries are free
    t.failed("1.2.3.4", "ann", now=5)
    assert t.wait("1.2.3.4", "ann", now=5) == pytest.approx(1.0)
    assert t.wait("1.2.3.4", "ANN ", now=5) == pytest.approx(1.0)  # the same user, however spelt
    assert t.wait("5.6.7.8", "ann", now=5) == 0  # another address is not slowed down
    assert t.wait("1.2.3.4", "bob", now=5) == 0  # nor another user from this address
    waits = []
    for i in range(6, 12):
        now = 100 * i
        t.failed("1.2.3.4", "ann", now=now)
        waits.append(t.wait("1.2.3.4", "ann", now=now))
    assert waits == [2, 4, 8, 16, 32, 64]  # each further wrong try doubles the wait
    t.succeeded("1.2.3.4", "ann")
    assert t.wait("1.2.3.4", "ann", now=1200) == 0
    # Many users tried from one address: the address as a whole is slowed down.
    for i in range(20):
        t.failed("9.9.9.9", f"user{i}", now=2000)
    t.failed("9.9.9.9", "someone", now=2000)
    assert t.wait("9.9.9.9", "anyone", now=2000) == pytest.approx(1.0)
    assert t.wait("9.9.9.9", "anyone", now=2000 + 3601) == 0  # forgotten an hour later


def test_an_allowance_counts_per_visitor_and_refuses_what_would_pass_the_limit():
    a = Allowance(limit=5, window=600, what="pictures classified")
    a.take("ip:1.2.3.4", 3, now=0)
    with pytest.raises(LimitReached) as e:
        a.take("ip:1.2.3.4", 3, now=10)
    assert "5 pictures classified per visitor every 10 minutes; try again in 591 s" in str(e.value)
    a.take("ip:1.2.3.4", 2, now=10)  # what fits still goes through
    a.take("ip:5.6.7.8", 5, now=10)
    with pytest.raises(LimitReached) as e:
        a.take("ip:9.9.9.9", 6, now=10)
    assert "at most 5 at a time" in str(e.value)
    a.take("ip:1.2.3.4", 3, now=601)


# --- hidden paths, zip limit, weights ------------------------------------------------------------------
def test_where_a_picture_came_from_never_shows_a_path():
    assert source_name("/home/ann/private/holiday/cat/1.png") == "1.png"
    assert source_name(r"C:\Users\ann\Pictures\cat.jpg") == "cat.jpg"
    assert source_name("/tmp/gradio/3f2a/pets.zip!animals/cat/1.png") == "1.png in pets.zip"
    assert source_name("https://example.org/cats/1.jpg") == "https://example.org/cats/1.jpg"
    assert source_name("") == ""


def _zip_bomb(path: Path, megabytes: int) -> Path:
    """A small zip (a few MB) with one member of ``megabytes`` MiB of zeros, and a real picture."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("cat/big.png", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(megabytes):
                f.write(block)
        zf.writestr("cat/small.png", imagegen.encode(imagegen.noisy((200, 30, 30)), "PNG"))
    return path


def test_a_zip_that_unpacks_to_more_than_the_limit_is_refused_by_name(project, tmp_path):
    assert config.MAX_ZIP_TOTAL_BYTES <= 512 * 1024 * 1024  # well below the 2 GB it was
    bomb = _zip_bomb(tmp_path / "pets.zip", config.MAX_ZIP_TOTAL_BYTES // (1 << 20) + 20)
    assert bomb.stat().st_size < 5_000_000
    plan = plan_import([bomb], project=project)
    assert plan.pictures == 0
    assert "pets.zip will be refused: it unpacks to" in plan.summary()
    assert "more than the 500 MB a zip file may hold; split it into smaller zip files" in plan.summary()
    rep = import_files(project, [bomb])
    assert rep.imported == 0 and len(rep.rejected) == 1  # one message naming the zip, not one per member
    assert rep.rejected[0].file == str(bomb) and "split it into smaller zip files" in rep.rejected[0].reason
    assert project.items() == []
    # Below the limit the same zip imports.
    small = _zip_bomb(tmp_path / "ok.zip", 5)
    rep = import_files(project, [small])
    assert rep.imported == 1 and not any("split it" in r.reason for r in rep.rejected)


def _weights(tmp_path: Path, seed: int) -> Path:
    import torch
    import torchvision

    torch.manual_seed(seed)
    p = tmp_path / f"w{seed}.pth"
    torch.save(torchvision.models.resnet18().state_dict(), p)
    return p


def test_a_stored_weights_file_stays_only_for_an_accepted_run(project, tmp_path):
    w1 = store_weights_file(project.root, _weights(tmp_path, 1), "mine.pth")
    w2 = store_weights_file(project.root, _weights(tmp_path, 2), "other.pth")
    assert w1.parent == project.root / "models" / "weights"
    assert settle_weights_file(project.root, w1, accepted_run="20260101-000000-abcd") and w1.is_file()
    assert not settle_weights_file(project.root, w2, accepted_run=None) and not w2.exists()
    # The same file given again for a run that is not accepted: an accepted run started from it, it stays.
    again = store_weights_file(project.root, _weights(tmp_path, 1), "mine-again.pth")
    assert again == w1 and settle_weights_file(project.root, again, accepted_run=None) and w1.is_file()
    # A file outside the project (given on the command line) is never touched.
    outside = _weights(tmp_path, 3)
    assert settle_weights_file(project.root, outside, accepted_run=None) and outside.is_file()
