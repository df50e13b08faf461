"""The downloader and the ``openai`` model source, against a real local HTTP server."""

from __future__ import annotations

import errno
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from glidectl import plugins
from glidectl.errors import GlidectlError
from glidectl.glide import create_model, load_model
from glidectl.glide.checkpoints import expected_shapes
from glidectl.glide.download import download
from glidectl.glide.loading import resolve_spec
from glidectl.glide.options import official_options
from glidectl.glide.sources import OpenAISource

PAYLOAD = os.urandom(300_000)
HTML = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>\n"


def official_pt(kind: str, tmp_path, zip_format: bool = True) -> bytes:
    """A torch.save of OpenAI's ``kind`` state_dict (its keys and shapes), every tensor a
    view of one zero: the official file's layout in under 100 KB (``zip_format=False``: in
    torch's format before 1.6)."""
    zero = torch.zeros(())
    state = {k: zero.expand(shape)
             for k, shape in expected_shapes(official_options(kind).to_json())}
    torch.save(state, tmp_path / f"official-{kind}.pt",
               _use_new_zipfile_serialization=zip_format)
    return (tmp_path / f"official-{kind}.pt").read_bytes()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """Downloads allowed (tests/data/conftest.py sets HF_HUB_OFFLINE for the whole session,
    and the downloader honours it); the offline tests set GLIDECTL_OFFLINE themselves."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("GLIDECTL_OFFLINE", raising=False)


class Server:
    """Serves ``files`` on 127.0.0.1; with ``drop_first`` the first GET stops midway. Servers
    that get Range wrong: ``ranges_ignored`` answers 200 with the whole file, ``resume_at``
    answers 206 from that byte whatever was asked, ``cut_at`` sends no Content-Length and
    ends the body there."""

    def __init__(self, files: dict[str, bytes], drop_first: bool = False, delay: float = 0.0,
                 ranges_ignored: bool = False, resume_at: int | None = None,
                 cut_at: int | None = None, busy_first: int = 0):
        self.files, self.drop_first, self.ranges = files, drop_first, []
        self.busy = busy_first  # answer that many GETs with 503 (Retry-After 0) first
        self.ranges_ignored, self.resume_at, self.cut_at = ranges_ignored, resume_at, cut_at
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if server.busy > 0:
                    server.busy -= 1
                    server.ranges.append("busy")
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                if rng and server.ranges_ignored:
                    rng = None
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if rng and server.resume_at is not None:
                    start = server.resume_at
                if start >= len(data):  # as real servers do: nothing left to send
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if server.cut_at is None:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    body, self.close_connection = body[:server.cut_at], True
                self.end_headers()
                time.sleep(delay)  # a slow line: downloads overlap
                if server.drop_first and len(server.ranges) == 1:
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/base.pt"


def test_plain_download_lands_atomically(tmp_path):
    with Server({"base.pt": PAYLOAD}) as srv:
        dest = download(f"{srv.url}/base.pt", tmp_path / "m" / "base.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "m" / "base.pt.part").exists()
    assert srv.ranges == [None]


def test_dropped_connection_resumes_with_range(tmp_path):
    with Server({"base.pt": PAYLOAD}, drop_first=True) as srv:
        dest = download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=False, retries=3)
    assert dest.read_bytes() == PAYLOAD
    assert srv.ranges[0] is None and srv.ranges[1] == f"bytes={len(PAYLOAD) // 3}-"


def test_failed_run_keeps_part_file_and_next_run_resumes(tmp_path):
    dest = tmp_path / "base.pt"
    with Server({"base.pt": PAYLOAD}, drop_first=True) as srv:
        with pytest.raises(GlidectlError, match="run again to resume"):
            download(f"{srv.url}/base.pt", dest, progress=False, retries=1)
        part = tmp_path / "base.pt.part"
        assert part.stat().st_size == len(PAYLOAD) // 3 and not dest.exists()
        download(f"{srv.url}/base.pt", dest, progress=True, retries=1)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert srv.ranges[-1] == f"bytes={len(PAYLOAD) // 3}-"


def test_unreachable_server_does_not_promise_a_resume(tmp_path):
    """Nothing arrived, so there is no .part to resume from and the message names none."""
    with pytest.raises(GlidectlError) as failed:
        download(_dead_url(), tmp_path / "base.pt", progress=False, retries=1)
    assert "check the connection and run again, or put the file at" in str(failed.value)
    assert ".part" not in str(failed.value)
    assert [p.name for p in tmp_path.iterdir()] == [".base.pt.lock"]  # no .part


def test_cached_file_is_used_without_network(tmp_path):
    dest = tmp_path / "base.pt"
    dest.write_bytes(b"cached")
    assert download(_dead_url(), dest, progress=False) == dest


def test_offline_without_cache_tells_where_to_put_the_file(tmp_path, monkeypatch):
    dest = tmp_path / "openai" / "base.pt"
    with pytest.raises(GlidectlError) as info:
        download(_dead_url(), dest, progress=False, retries=1, instead="pass the path of X")
    assert str(dest) in str(info.value) and "or pass the path of X." in str(info.value)
    monkeypatch.delenv("GLIDECTL_OFFLINE", raising=False)
    for variable in ("HF_HUB_OFFLINE", "GLIDECTL_OFFLINE"):  # the one set is named
        monkeypatch.setenv(variable, "1")
        with pytest.raises(GlidectlError, match=rf"downloads are off \({variable}\)"):
            download("http://example.invalid/base.pt", dest, progress=False)


def test_a_cache_folder_that_cannot_be_made_says_why_in_words(tmp_path, monkeypatch):
    """It printed Python's "[Errno 17] File exists: ..." for a dangling link."""
    for variable in ("HF_HUB_OFFLINE", "GLIDECTL_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / "home").symlink_to(tmp_path / "gone")
    with pytest.raises(GlidectlError) as info:
        download(_dead_url(), tmp_path / "home" / "openai" / "base.pt", progress=False)
    assert str(info.value) == (
        f"Cannot create cache folder {str(tmp_path / 'home' / 'openai')!r} (it is under "
        f"{str(tmp_path / 'home')!r}, a broken symbolic link (to {str(tmp_path / 'gone')!r})); "
        "set GLIDECTL_HOME to a writable folder or fix that path.")
    (tmp_path / "file").write_text("x")
    with pytest.raises(GlidectlError, match=r"\(Not a directory\); set GLIDECTL_HOME"):
        download(_dead_url(), tmp_path / "file" / "openai" / "base.pt", progress=False)


def test_http_error_is_one_line(tmp_path):
    with Server({}) as srv, pytest.raises(GlidectlError, match="HTTP 404"):
        download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=False)


def test_a_server_busy_for_a_moment_is_asked_again(tmp_path):
    """503 (and 429, 500, 502, 504) are what a CDN answers for a moment: retried, as pip
    and huggingface_hub do; still busy after the retries, the line says so."""
    with Server({"base.pt": PAYLOAD}, busy_first=2) as srv:
        path = download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=False)
    assert path.read_bytes() == PAYLOAD and srv.ranges[:2] == ["busy", "busy"]
    with Server({"base.pt": PAYLOAD}, busy_first=9) as srv, pytest.raises(
            GlidectlError, match=r"\(HTTP 503 Service Unavailable\); check the connection"):
        download(f"{srv.url}/base.pt", tmp_path / "again.pt", progress=False)


def test_a_folder_where_the_file_goes_is_said_as_that_not_as_the_network(tmp_path):
    (tmp_path / "base.pt").mkdir()
    with Server({"base.pt": PAYLOAD}) as srv, pytest.raises(
            GlidectlError, match=r"but cannot put it at .*make that path free") as info:
        download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=False)
    assert "connection" not in str(info.value) and len(srv.ranges) == 1  # fetched once
    assert (tmp_path / "base.pt.part").read_bytes() == PAYLOAD  # taken by the next run


def test_openai_source_downloads_once_into_glidectl_home(tmp_path, monkeypatch):
    served = official_pt("base", tmp_path)
    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "home"))
    with Server({"base.pt": served}) as srv:
        monkeypatch.setenv("GLIDECTL_OPENAI_URL", srv.url)
        source = plugins.model_sources().get("openai")
        assert source.url("base") == f"{srv.url}/base.pt"
        # OpenAI's folder names the inpainting files with underscores (a hyphen was a 404)
        assert source.url("base-inpaint") == f"{srv.url}/base_inpaint.pt"
        assert source.url("upsample-inpaint") == f"{srv.url}/upsample_inpaint.pt"
        path = source.resolve("base", progress=False)
        assert path == tmp_path / "home" / "openai" / "base.pt"
        assert path.read_bytes() == served
        assert resolve_spec("openai:base") == path
    assert srv.ranges == [None]  # the second resolve used the cache
    with pytest.raises(GlidectlError, match="Unknown OpenAI model 'bas'"):
        source.resolve("bas")
    with pytest.raises(GlidectlError, match="Unknown model source"):
        load_model("nosuch:base")


def test_a_checkpoint_put_in_the_cache_by_hand_loads_as_openai_spec(tmp_path, monkeypatch,
                                                                   kit):
    options = kit.tiny("base")
    model = kit.randomize(create_model(options), seed=5).eval()
    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path))
    (tmp_path / "openai").mkdir()
    torch.save(model.state_dict(), tmp_path / "openai" / "base.pt")
    monkeypatch.setenv("GLIDECTL_OPENAI_URL", _dead_url().rsplit("/", 1)[0])
    loaded = load_model("openai:base", options=options)
    assert torch.equal(loaded.out[2].weight, model.out[2].weight)


def test_download_command(tmp_path):
    env = {**os.environ, "GLIDECTL_HOME": str(tmp_path)}
    served = official_pt("upsample", tmp_path)
    with Server({"upsample.pt": served}) as srv:
        env["GLIDECTL_OPENAI_URL"] = srv.url
        cmd = [sys.executable, "-m", "glidectl", "download", "OpenAI:upsample", "-q"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "openai:upsample" in out.stdout and out.stderr == ""  # -q: no progress bar
        assert (tmp_path / "openai" / "upsample.pt").read_bytes() == served
        bad = subprocess.run([sys.executable, "-m", "glidectl", "download", "basee"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "basee" in bad.stderr


def test_download_checks_a_file_already_cached_as_a_download(tmp_path, kit, monkeypatch,
                                                            capsys):
    """A file put in the cache by hand was "already cached" whatever it held; it is checked
    as a download is: OpenAI's checkpoint passes, another model is one sentence (exit 2),
    and the file is kept. (``glidectl download`` in this process: its start-up is the CLI
    tests'.)"""
    from test_sample_cmd import in_process

    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path))
    monkeypatch.setenv("GLIDECTL_OPENAI_URL", _dead_url().rsplit("/", 1)[0])
    (tmp_path / "openai").mkdir()
    (tmp_path / "openai" / "upsample.pt").write_bytes(official_pt("upsample", tmp_path))
    torch.save(create_model(kit.tiny("base")).state_dict(), tmp_path / "openai" / "base.pt")
    good = in_process(capsys, "download", "-q", "upsample")
    assert good.returncode == 0 and "already cached" in good.stdout, good.stderr
    bad = in_process(capsys, "download", "-q", "base")
    cached = tmp_path / "openai" / "base.pt"
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith(f"Error: {str(cached)!r}, the cached openai:base, is not "
                                 "OpenAI's base checkpoint: it does not fit OpenAI's base "
                                 "model (")
    assert bad.stderr.rstrip().endswith("delete it and run glidectl download base again.")
    assert cached.is_file()


def test_a_failed_download_names_the_way_out_each_command_has(tmp_path, monkeypatch):
    """`glidectl download` cannot take a file path; `sample --base openai:base` can."""
    env = {**os.environ, "GLIDECTL_HOME": str(tmp_path),
           "GLIDECTL_OPENAI_URL": _dead_url().rsplit("/", 1)[0]}
    got = subprocess.run([sys.executable, "-m", "glidectl", "download", "base", "-q"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert got.returncode == 2 and "in place of" not in got.stderr, got.stderr
    for name in ("GLIDECTL_HOME", "GLIDECTL_OPENAI_URL"):
        monkeypatch.setenv(name, env[name])
    with pytest.raises(GlidectlError, match=r"a training run folder \(runs/NAME\) in place of "
                       "openai:base"):
        OpenAISource().resolve("base", progress=False)


@pytest.mark.parametrize("mirror", ["/srv/glide-mirror", "http://[::1", "mirror.example/glide"])
def test_a_mirror_address_that_is_no_url_is_one_line(tmp_path, mirror):
    """A folder path (or a malformed URL) in GLIDECTL_OPENAI_URL ended in urllib's
    ValueError traceback ("unknown url type")."""
    env = {**os.environ, "GLIDECTL_HOME": str(tmp_path), "GLIDECTL_OPENAI_URL": mirror}
    got = subprocess.run([sys.executable, "-m", "glidectl", "download", "base", "-q"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert got.returncode == 2 and got.stderr.count("\n") == 1, got.stderr
    assert got.stderr.startswith("Error: GLIDECTL_OPENAI_URL") and "file://" in got.stderr
    assert "Traceback" not in got.stderr and not (tmp_path / "openai").exists()


def test_a_full_disk_is_a_write_error_and_the_next_run_resumes(tmp_path):
    """A file size limit stands in for a full disk: no retries, no blame on the connection,
    and the bytes that fitted stay in .part for the next run to resume from."""
    import resource

    from glidectl.errors import WriteError

    dest = tmp_path / "base.pt"
    with Server({"base.pt": PAYLOAD}) as srv:
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
        try:
            with pytest.raises(WriteError) as failed:
                download(f"{srv.url}/base.pt", dest, progress=False, retries=3)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert srv.ranges == [None]
        message = str(failed.value)
        assert "Cannot write" in message and "base.pt.part' (File too large)" in message
        assert "connection" not in message and "resumes from base.pt.part" in message
        assert (tmp_path / "base.pt.part").stat().st_size == 100_000
        assert download(f"{srv.url}/base.pt", dest, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and srv.ranges[-1] == "bytes=100000-"


def test_a_whole_part_file_left_by_a_kill_is_kept(tmp_path):
    """Killed after the last byte but before the rename: the server refuses the range (416,
    ``bytes */N``) and the .part, which is the whole file, becomes the file."""
    (tmp_path / "base.pt.part").write_bytes(PAYLOAD)
    with Server({"base.pt": PAYLOAD}) as srv:
        dest = download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD and srv.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert not (tmp_path / "base.pt.part").exists()


def test_processes_wanting_one_file_download_it_once(tmp_path):
    """Each rank of a multi-GPU run loads openai:base at once: one downloads, the others
    wait for it and take the cached file, instead of writing one .part together."""
    from concurrent.futures import ThreadPoolExecutor

    dest = tmp_path / "base.pt"
    with Server({"base.pt": PAYLOAD}, delay=0.5) as srv:
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda _: download(f"{srv.url}/base.pt", dest,
                                                   progress=False), range(3)))
    assert got == [dest] * 3 and dest.read_bytes() == PAYLOAD
    assert srv.ranges == [None] and not (tmp_path / "base.pt.part").exists()


def test_download_says_another_process_fetched_what_it_waited_for(tmp_path):
    """`glidectl download` waiting on another process's lock: that process put the file in
    the cache, so this one says so instead of "downloaded" (and fetches nothing)."""
    import fcntl

    dest = tmp_path / "openai" / "base.pt"
    dest.parent.mkdir()
    env = {**os.environ, "GLIDECTL_HOME": str(tmp_path),
           "GLIDECTL_OPENAI_URL": _dead_url().rsplit("/", 1)[0]}
    with open(dest.with_name(".base.pt.lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a downloading process holds it
        waiting = subprocess.Popen([sys.executable, "-m", "glidectl", "download", "base"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env)
        assert "Waiting for another glidectl process" in waiting.stderr.readline()
        dest.write_bytes(PAYLOAD)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert "downloaded by another glidectl process while this one waited" in out
    assert ", downloaded)" not in out and dest.read_bytes() == PAYLOAD


def _fetch_openai(kind: str, files: dict[str, bytes], home, monkeypatch, **server):
    """``glidectl download KIND``'s ``OpenAISource().fetch`` from a local server holding
    ``files``: (the result or the GlidectlError raised, the server)."""
    monkeypatch.setenv("GLIDECTL_HOME", str(home))
    with Server(files, **server) as srv:
        monkeypatch.setenv("GLIDECTL_OPENAI_URL", srv.url)
        try:
            return OpenAISource().fetch(kind, progress=False, as_spec=False), srv
        except GlidectlError as exc:
            return exc, srv


@pytest.mark.parametrize("served, problem", [
    ("html", r"it is a web page \(a server's error or sign-in page\), not a PyTorch checkpoint"),
    ("random", r"it is not a PyTorch checkpoint \(torch.save's zip archive\)"),
    ("upsample", "it holds an upsample model, not a base model"),
    ("cut", r"it is cut short \(a zip archive without its end\)"),
    ("flipped", r"its entry 'official-base/data.pkl' is damaged \(a checksum mismatch\)"),
])
def test_a_download_that_is_not_the_checkpoint_is_not_cached(tmp_path, monkeypatch, served,
                                                              problem):
    """An error page served with 200, random bytes, the wrong model, a body cut short with
    no Content-Length to tell, a flipped byte: refused in one sentence naming the URL, and
    neither the file nor a .part stays in the cache."""
    base = official_pt("base", tmp_path)
    body = {"html": HTML, "random": PAYLOAD, "upsample": official_pt("upsample", tmp_path),
            "cut": base, "flipped": base[:300] + bytes([base[300] ^ 1]) + base[301:]}[served]
    failed, srv = _fetch_openai("base", {"base.pt": body}, tmp_path / "home", monkeypatch,
                                cut_at=len(base) // 2 if served == "cut" else None)
    assert isinstance(failed, GlidectlError) and failed.exit_code == 2
    assert re.fullmatch(rf"Downloaded {srv.url}/base.pt, but {problem}; nothing was cached: "
                        r"check the address and run again, or put the file at '.*' yourself\.",
                        str(failed)), failed
    assert sorted(p.name for p in (tmp_path / "home" / "openai").iterdir()) == [".base.pt.lock"]


def test_a_checkpoint_in_torchs_format_before_1_6_is_checked_by_its_keys(tmp_path,
                                                                          monkeypatch):
    """A file saved in torch's format before 1.6 (no zip archive, nothing to checksum) is
    cached when torch reads it as the official model, and refused when cut short."""
    old = official_pt("base", tmp_path, zip_format=False)
    assert not old.startswith(b"PK")
    fetched, _ = _fetch_openai("base", {"base.pt": old}, tmp_path / "home", monkeypatch)
    assert not isinstance(fetched, GlidectlError), fetched
    assert fetched.path.read_bytes() == old
    failed, srv = _fetch_openai("base", {"base.pt": old[: len(old) // 2]}, tmp_path / "cut",
                                monkeypatch)
    assert isinstance(failed, GlidectlError)
    assert str(failed).startswith(f"Downloaded {srv.url}/base.pt, but torch cannot read it")
    assert sorted(p.name for p in (tmp_path / "cut" / "openai").iterdir()) == [".base.pt.lock"]


def test_download_command_refuses_an_error_page(tmp_path):
    env = {**os.environ, "GLIDECTL_HOME": str(tmp_path)}
    with Server({"base.pt": HTML}) as srv:
        env["GLIDECTL_OPENAI_URL"] = srv.url
        got = subprocess.run([sys.executable, "-m", "glidectl", "download", "base", "-q"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert got.returncode == 2 and got.stderr.count("\n") == 1, got.stderr
    assert f"Downloaded {srv.url}/base.pt, but it is a web page" in got.stderr
    assert not (tmp_path / "openai" / "base.pt").exists()


def test_a_server_that_ignores_range_restarts_the_file(tmp_path):
    """A .part resumed from a server that answers the Range request with 200 and the whole
    file: the body replaces the .part, never follows it."""
    (tmp_path / "base.pt.part").write_bytes(PAYLOAD[:1000])
    with Server({"base.pt": PAYLOAD}, ranges_ignored=True) as srv:
        dest = download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD and srv.ranges == ["bytes=1000-"]


def test_a_server_that_resumes_at_another_byte_restarts_the_file(tmp_path):
    """A 206 whose Content-Range starts elsewhere than the .part ends is not glued on."""
    (tmp_path / "base.pt.part").write_bytes(PAYLOAD[:1000])
    with Server({"base.pt": PAYLOAD}, resume_at=0) as srv:
        dest = download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD and srv.ranges == ["bytes=1000-", None]


def test_a_part_larger_than_the_file_restarts_the_file(tmp_path):
    (tmp_path / "base.pt.part").write_bytes(PAYLOAD + b"tail of another file")
    with Server({"base.pt": PAYLOAD}) as srv:
        dest = download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert srv.ranges == [f"bytes={len(PAYLOAD) + 20}-", None]


@pytest.mark.parametrize("kept", ["foreign start", "whole other file"])
def test_a_part_of_another_file_is_fetched_again_from_byte_zero(tmp_path, monkeypatch, kept):
    """A .part whose bytes are not the checkpoint's start (a mirror's file changed between
    two runs) resumes into a file that fails the check: it is fetched again whole."""
    served = official_pt("base", tmp_path)
    other = official_pt("base-inpaint", tmp_path)
    part = tmp_path / "home" / "openai" / "base.pt.part"
    part.parent.mkdir(parents=True)
    start = 1000 if kept == "foreign start" else len(served)  # the whole size: a 416
    part.write_bytes(other[:start])
    fetched, srv = _fetch_openai("base", {"base.pt": served}, tmp_path / "home", monkeypatch)
    assert not isinstance(fetched, Exception), fetched
    assert fetched.path.read_bytes() == served and not part.exists()
    assert srv.ranges == [f"bytes={start}-", None]


def test_a_file_mirror_linked_to_dev_zero_stops_in_one_line(tmp_path):
    """`glidectl download` from a file:// mirror whose base.pt links to /dev/zero wrote
    without end (63 GB in a minute); it stops at once, keeping no .part."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "base.pt").symlink_to("/dev/zero")
    url, dest = f"file://{mirror}/base.pt", tmp_path / "home" / "openai" / "base.pt"
    env = {**os.environ, "GLIDECTL_HOME": str(tmp_path / "home"),
           "GLIDECTL_OPENAI_URL": f"file://{mirror}"}
    got = subprocess.run([sys.executable, "-m", "glidectl", "download", "base", "-q"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert got.returncode == 2, got.stderr
    assert got.stderr == (
        f"Error: Stopped downloading {url}: it sent more than the 0 bytes it announced (a "
        "device such as /dev/zero, or a file still being written); nothing was cached: check "
        f"the address and run again, or put the file at {str(dest)!r} yourself.\n")
    assert sorted(p.name for p in dest.parent.iterdir()) == [".base.pt.lock"]


def test_a_file_mirror_larger_than_any_checkpoint_is_refused_unwritten(tmp_path,
                                                                       monkeypatch):
    """A file:// mirror's file of more bytes than a checkpoint holds (here the bound is
    made 100,000 bytes) is refused before a byte is written."""
    from glidectl.glide import download as downloads

    monkeypatch.setattr(downloads, "MAX_BYTES", 100_000)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "base.pt").write_bytes(PAYLOAD)
    monkeypatch.setenv("GLIDECTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GLIDECTL_OPENAI_URL", f"file://{mirror}")
    with pytest.raises(GlidectlError) as failed:
        OpenAISource().fetch("base", progress=False, as_spec=False)
    dest = tmp_path / "home" / "openai" / "base.pt"
    assert failed.value.exit_code == 2 and str(failed.value) == (
        f"Stopped downloading file://{mirror}/base.pt: it announces 300,000 bytes, more than a "
        "GLIDE checkpoint holds (100,000 at most); nothing was cached: check the address and "
        f"run again, or put the file at {str(dest)!r} yourself.")
    assert sorted(p.name for p in dest.parent.iterdir()) == [".base.pt.lock"]


def test_a_body_without_length_past_any_checkpoints_size_stops(tmp_path, monkeypatch):
    """A server that sends no Content-Length and more bytes than a checkpoint holds (an
    endless body; here the bound is made 100,000 bytes) is stopped, keeping no .part."""
    from glidectl.glide import download as downloads

    monkeypatch.setattr(downloads, "MAX_BYTES", 100_000)
    dest = tmp_path / "base.pt"
    with Server({"base.pt": PAYLOAD}, cut_at=len(PAYLOAD)) as srv:
        with pytest.raises(GlidectlError) as failed:
            download(f"{srv.url}/base.pt", dest, progress=False)
    assert str(failed.value) == (
        f"Stopped downloading {srv.url}/base.pt: it sent more than 100,000 bytes, more than a "
        "GLIDE checkpoint holds (a link to /dev/zero, or a server whose body never ends); "
        f"nothing was cached: check the address and run again, or put the file at "
        f"{str(dest)!r} yourself.")
    assert srv.ranges == [None]  # not tried again
    assert sorted(p.name for p in tmp_path.iterdir()) == [".base.pt.lock"]


def test_a_download_of_integer_weights_is_not_cached(tmp_path):
    """Keys and shapes right but int8 tensors: every loader refuses them, so the download
    check does too (it cached the file, and download then only said "already cached")."""
    from glidectl.glide.official_files import official_file_problem

    official_pt("base", tmp_path)
    state = torch.load(tmp_path / "official-base.pt", weights_only=True)
    torch.save({k: v.to(torch.int8) for k, v in state.items()}, tmp_path / "int8.pt")
    problem = official_file_problem(tmp_path / "int8.pt", "base")
    assert problem and problem.endswith("holds int8 numbers, where OpenAI's weights are floats")


def test_a_dangling_link_in_the_cache_is_not_written_over(tmp_path):
    """A link to a drive not mounted now is the user's way of keeping 1.5 GB elsewhere."""
    link = tmp_path / "openai" / "base.pt"
    link.parent.mkdir()
    link.symlink_to(tmp_path / "unmounted" / "base.pt")
    with pytest.raises(GlidectlError, match=r"is a link to .*unmounted/base.pt', which is not "
                       "there"):
        download(_dead_url(), link, progress=False)
    assert link.is_symlink()
    link.unlink()
    link.symlink_to(tmp_path)  # a link to a folder: said as that, not as a missing drive
    with pytest.raises(GlidectlError, match=r"which is a folder, not a checkpoint file"):
        download(_dead_url(), link, progress=False)


def test_a_url_as_a_model_spec_says_urls_are_not_fetched():
    with pytest.raises(GlidectlError, match=r"is a URL, and models are not fetched from URLs"):
        resolve_spec("https://example.org/base.pt")


def test_a_tilde_naming_no_user_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys):
    """``--base ~runs/x`` (the '/' after '~' missing) and a GLIDECTL_HOME of ``~nobody-here``
    were pathlib's "Could not determine home directory." traceback."""
    from cli_helpers import exit_code

    monkeypatch.chdir(tmp_path)
    (tmp_path / "glide.toml").write_text('[model]\nsize = "tiny"\n[data]\nsource = "demo:shapes"\n')
    spec = "~glidectl-no-such-user/x.pt"
    for args in (("sample", "a", "--base", spec, "-o", "out"), ("fit-steps", spec, "--prompt",
                 "a"), ("train", "--config", "glide.toml", "--set", f"model.init={spec}")):
        assert exit_code(*args) == 2, args
        assert capsys.readouterr().err == (
            f"Error: {spec!r} starts with ~glidectl-no-such-user, but this machine has no user "
            "'glidectl-no-such-user' (a '/' missing after '~'?); write the path in full.\n")
    monkeypatch.setenv("GLIDECTL_HOME", "~glidectl-no-such-user/")
    assert exit_code("download", "base", "-q") == 2
    assert "Error: '~glidectl-no-such-user' ($GLIDECTL_HOME) starts with " in \
        capsys.readouterr().err


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK])
def test_a_cache_on_a_filesystem_without_locks_downloads(tmp_path, monkeypatch, capsys, code):
    """Lustre without ``-o flock`` (ENOSYS) or NFS without lockd (ENOLCK) refuses flock: that
    was taken as another process's lock, said "Waiting for another glidectl process", and the
    blocking flock's OSError ended the download in a traceback."""
    import fcntl

    def no_locks(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with Server({"base.pt": PAYLOAD}) as srv:
        dest = download(f"{srv.url}/base.pt", tmp_path / "base.pt", progress=True)
    assert dest.read_bytes() == PAYLOAD and "Waiting" not in capsys.readouterr().err


def test_a_file_mirror_without_the_file_says_so_not_the_connection(tmp_path):
    """A ``file://`` mirror (GLIDECTL_OPENAI_URL) missing the file, or set to the file itself
    (``…/base.pt/base.pt``), was asked three times and said "check the connection and run
    again": there is no connection, and asking again finds the same."""
    (tmp_path / "base.pt").write_bytes(PAYLOAD)
    for url, why in ((tmp_path / "missing" / "base.pt", "No such file or directory"),
                     (tmp_path / "base.pt" / "base.pt", "Not a directory")):
        with pytest.raises(GlidectlError) as err:
            download(url.as_uri(), tmp_path / "cache" / "base.pt", progress=False)
        assert str(err.value) == (f"Cannot read {url.as_uri()} ({why}); check the address and "
                                  f"run again, or put the file at "
                                  f"{str(tmp_path / 'cache' / 'base.pt')!r} yourself.")
    assert not list((tmp_path / "cache").glob("base.pt*"))
