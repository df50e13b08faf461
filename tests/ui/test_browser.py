"""The web UI in a real headless Chromium: type a prompt, generate, see the image.

Needs gradio, selenium, chromium and chromedriver (Debian: apt-get install chromium
chromium-driver); skips with the reason when one is missing. Leaves a screenshot in
test-artifacts/ui.png.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1100",
)


def _which(*names: str) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"glidectl ui exited early:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"glidectl ui did not answer on {url} within {timeout} s")


@pytest.fixture()
def browser_tools() -> tuple[str, str]:
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'glidectl[ui]')")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    chromium = _which("chromium", "chromium-browser", "google-chrome")
    driver = _which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium/chromedriver not found (apt-get install chromium chromium-driver)")
    return chromium, driver


@dataclass
class _Served:
    """A ``glidectl ui`` started by :func:`_serve`; ``output``: all it printed, once stopped."""

    url: str
    proc: subprocess.Popen
    output: str = ""


def _stop(proc: subprocess.Popen) -> str:
    """Stop a server (SIGTERM, SIGKILL after 10 s): all it printed, its pipe closed (left
    open, it was a ResourceWarning of the test process)."""
    proc.terminate()
    try:
        return proc.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


@contextlib.contextmanager
def _serve(models_dir: Path, tmp_path: Path, *extra: str, env: dict | None = None):
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1",
           "GLIDECTL_HOME": str(tmp_path / "home"), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "glidectl", "ui", "--models-dir", str(models_dir),
         "--port", str(port), "--device", "cpu", "--output-dir", str(tmp_path / "out"), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    served = _Served(f"http://127.0.0.1:{port}/", proc)
    try:
        _wait_http(served.url, proc)
        yield served
    finally:
        served.output = _stop(proc)


def test_stopping_a_server_keeps_what_it_printed_and_closes_its_pipe():
    """Each browser test left its ``glidectl ui``'s output pipe open: "ResourceWarning:
    unclosed file <_io.TextIOWrapper name=12 encoding='UTF-8'>" in the test process."""
    import gc
    import warnings

    child = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: "
             "(print('stopped'), sys.exit(0))); print('serving', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline() == "serving\n"
    with warnings.catch_warnings():  # what earlier tests of this worker process left
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert _stop(proc) == "stopped\n"  # its last lines, printed as it stops
        assert proc.returncode == 0 and proc.stdout.closed
        del proc
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks


@pytest.fixture()
def server(models_dir, tmp_path):
    with _serve(models_dir, tmp_path) as served:
        yield served.url


def test_login_is_required_with_auth_over_real_http(models_dir, tmp_path):
    """--auth through gradio's auth: no config without a login; a wrong password is refused."""
    import http.cookiejar
    import urllib.error
    import urllib.parse

    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'glidectl[ui]')")
    with _serve(models_dir, tmp_path, env={"GLIDECTL_UI_AUTH": "alice:s3cret"}) as served:
        url = served.url
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "config", timeout=10)
        denied.value.close()  # its response holds the connection
        assert denied.value.code == 401
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def login(password: str) -> int:
            form = urllib.parse.urlencode({"username": "alice", "password": password}).encode()
            try:
                with opener.open(url + "login", data=form, timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                exc.close()
                return exc.code

        assert login("wrong") == 400
        assert login("s3cret") == 200
        with opener.open(url + "config", timeout=10) as resp:
            assert resp.status == 200 and b"glidectl" in resp.read()


def test_sigterm_stops_the_ui_like_ctrl_c_and_removes_its_empty_temp_folder(models_dir,
                                                                            tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'glidectl[ui]')")
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp_path),
           "GLIDECTL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "glidectl", "ui", "--models-dir", str(models_dir),
         "--port", str(port), "--device", "cpu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc)
        lines = iter(proc.stdout.readline, "")  # until it serves (SIGTERM while it starts
        next(line for line in lines if "images are saved in" in line)  # is "Aborted.")
        assert list(tmp_path.glob("glidectl-ui-*"))  # its default output folder
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert not list(tmp_path.glob("glidectl-ui-*")), out


def _set_number(driver, label: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"input[type=number][aria-label='{label}']")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value, Keys.TAB)


def _wait(driver):
    """A 60 s wait whose checks may meet an element the page has just re-rendered (a toast,
    a textbox): a stale reference is looked up again on the next poll, not a failure."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))


def _close_toasts(driver) -> None:
    """Click every toast's close button; one that closed itself meanwhile is gone already."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for close in driver.find_elements(By.CSS_SELECTOR, ".toast-close"):
        try:
            close.click()
        except StaleElementReferenceException:
            pass


def _page_ready(driver, wait):
    """The prompt box, once the whole page (down to the Generate button) is drawn; under load
    gradio renders the controls one by one."""
    from selenium.webdriver.common.by import By

    controls = ("#generate", "#seed input",
                "input[type=number][aria-label='Base steps']")
    wait.until(lambda d: all(d.find_elements(By.CSS_SELECTOR, c) for c in controls))
    return driver.find_element(By.CSS_SELECTOR, "#prompt textarea")


def _chrome(browser_tools: tuple[str, str], profile: Path):
    """A headless Chromium driven by chromedriver (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_tools
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not fetch drivers
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def test_generate_in_a_real_browser(browser_tools, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = _chrome(browser_tools, tmp_path / "chromium-profile")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        driver.get(server)
        wait = _wait(driver)
        prompt = _page_ready(driver, wait)
        base = driver.find_element(By.CSS_SELECTOR, "#base-model input")
        assert base.get_attribute("value") == "tiny.safetensors"
        prompt.send_keys("a red circle on a white background")
        schedule = driver.find_element(By.CSS_SELECTOR, "#schedule input")
        assert schedule.get_attribute("value") == "(default)"
        schedule.click()
        schedule.send_keys(Keys.CONTROL, "a")
        schedule.send_keys("karras", Keys.ENTER)
        _set_number(driver, "Images per run", "2")
        _set_number(driver, "Base steps", "2")
        # a seed eval draws (63 bits): a number box's JavaScript number rounded it to another
        box = driver.find_element(By.CSS_SELECTOR, "#seed input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("5754344331239393581", Keys.TAB)
        driver.find_element(By.CSS_SELECTOR, "#generate").click()
        images = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery img") or False)
        assert images[0].get_attribute("src")
        seeds = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#seed-used textarea")
                           .get_attribute("value") or False)
        seed = 5754344331239393581
        assert seeds == f"{seed}, {seed + 1}"  # the seeds that made the two images
        assert "Upsampler steps" not in driver.find_element(By.TAG_NAME, "body").text
        memory = driver.find_element(By.CSS_SELECTOR, "#memory textarea").get_attribute("value")
        assert "MiB" in memory or "GiB" in memory
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) >= 2)
        used = driver.find_element(By.CSS_SELECTOR, "#settings-used").text
        assert '"steps": "2"' in used and f'"seed": {seed}' in used
        assert '"schedule": "karras"' in used  # chosen in the Schedule dropdown
        assert f'"image_seeds": [\n    {seed},\n    {seed + 1}\n  ]' in used
    finally:
        driver.save_screenshot(str(ARTIFACTS / "ui.png"))
        driver.quit()
    assert (ARTIFACTS / "ui.png").stat().st_size > 1000


def test_an_empty_seed_box_draws_a_seed_and_a_refusal_is_one_sentence(browser_tools,
                                                                       models_dir, tmp_path):
    """Clearing the seed box is a random seed (as -1), not int()'s TypeError in the page; a
    refusal is one line in the UI's terminal too, not a traceback."""
    driver = _chrome(browser_tools, tmp_path / "chromium-profile")
    try:
        with _serve(models_dir, tmp_path) as served:
            _refusal_then_an_empty_seed(driver, served.url)
    finally:
        driver.quit()
    terminal = served.output
    assert "Error: Type a prompt first.\n" in terminal
    assert "Error: Images per run must be from 1 to 16; got 40.\n" in terminal
    assert "Traceback" not in terminal, terminal


def _refusal_then_an_empty_seed(driver, server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(server)
    wait = _wait(driver)
    _page_ready(driver, wait)
    driver.find_element(By.CSS_SELECTOR, "#generate").click()  # no prompt yet
    toast = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".toast-body").text
                       .strip() or False)
    assert "Type a prompt first." in toast
    _close_toasts(driver)
    driver.find_element(By.CSS_SELECTOR, "#prompt textarea").send_keys("a red circle")
    _set_number(driver, "Images per run", "40")  # past its end: said, not made 16
    driver.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda d: any("Images per run must be from 1 to 16; got 40." in t.text
                             for t in d.find_elements(By.CSS_SELECTOR, ".toast-body")))
    _close_toasts(driver)
    # a closed toast fades out with an empty body: wait until it has gone, so that the
    # check below sees only what this click brings
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".toast-body"))
    _set_number(driver, "Images per run", "1")
    _set_number(driver, "Base steps", "2")
    seed = driver.find_element(By.CSS_SELECTOR, "#seed input")
    seed.send_keys(Keys.CONTROL, "a", Keys.DELETE, Keys.TAB)
    driver.find_element(By.CSS_SELECTOR, "#generate").click()
    used = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#seed-used textarea")
                      .get_attribute("value") or [t.text for t in d.find_elements(
                          By.CSS_SELECTOR, ".toast-body") if t.text.strip()])
    assert isinstance(used, str) and int(used) >= 0, used
    assert "int()" not in driver.find_element(By.TAG_NAME, "body").text


def test_a_fitted_schedule_brings_its_guidance_and_warnings_name_no_server_paths(
        browser_tools, models_dir, tmp_path):
    """A file fitted at guidance 3.25 (to other weights): picking it set sampler and steps but
    left Guidance at 3 on a slider stepping by 0.5, so a click warned "sample with Guidance
    set to 3.25"; and the page's warnings named the file by its server path."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from test_bench_limits import bespoke_file

    folder = tmp_path / "models"
    step = folder / "my-run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((models_dir / "tiny.safetensors").read_bytes())
    path = bespoke_file(step / "model.safetensors", folder / "my-run" / "schedule.json", 3)
    path.write_text(json.dumps({**json.loads(path.read_text()), "guidance": 3.25,
                                "model_sha256": "ab" * 32}))
    driver = _chrome(browser_tools, tmp_path / "chromium-profile")
    try:
        with _serve(folder, tmp_path) as served:
            driver.get(served.url)
            wait = _wait(driver)
            _page_ready(driver, wait).send_keys("a red circle")
            _set_number(driver, "Images per run", "1")
            schedule = driver.find_element(By.CSS_SELECTOR, "#schedule input")
            schedule.click()
            schedule.send_keys(Keys.CONTROL, "a")
            schedule.send_keys("fitted (schedule.json)", Keys.ENTER)
            box = driver.find_element(By.CSS_SELECTOR,
                                      "input[type=number][aria-label='Guidance']")
            wait.until(lambda d: box.get_attribute("value") == "3.25")
            assert driver.execute_script("return arguments[0].validity.valid", box)  # on a step
            assert driver.find_element(By.CSS_SELECTOR, "#sampler input").get_attribute(
                "value") == "bespoke"
            driver.find_element(By.CSS_SELECTOR, "#generate").click()
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#seed-used textarea")
                       .get_attribute("value"))
            toasts = wait.until(lambda d: [t.text for t in d.find_elements(
                By.CSS_SELECTOR, ".toast-body") if t.text.strip()] or False)
            used = driver.find_element(By.CSS_SELECTOR, "#settings-used").text
    finally:
        driver.quit()
    assert '"guidance": 3.25' in used
    assert len(toasts) == 1, toasts  # other weights; none about guidance
    assert "Schedule file 'my-run/schedule.json' was fitted to other weights" in toasts[0]
    assert "--out my-run/schedule.json --overwrite" in toasts[0]
    assert str(tmp_path) not in toasts[0]
