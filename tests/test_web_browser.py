"""``stqa web`` in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
selenium) loads the page, uploads a GIF, asks, and reads the answer off the page; an error shows as a
sentence; and the page asks nothing of any host but its own (the browser's network log is checked).

Nothing here downloads a browser: selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver
(``.ci/run`` installs them); without them the tests skip and say why.
``STQA_WEB_SCREENSHOT=PATH`` also saves a screenshot of the answered page there (docs/images/web.png).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from web_helpers import EXAMPLES, WebProcess, require_gradio

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

require_gradio()
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                f"apt-get install -y chromium chromium-driver (.ci/run does)", allow_module_level=True)
pytest.importorskip("selenium", reason="needs selenium (the test extra)")

from selenium import webdriver  # noqa: E402 - after the skips
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

EXAMPLE = json.loads((EXAMPLES / "examples.json").read_text())["examples"][1]  # action: 5 candidates, 5 bars
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
TIMEOUT_S = 90  # one answer takes well under a second; the first page load on a loaded 2-core CPU does not


@pytest.fixture(scope="module")
def web():
    page = WebProcess()
    yield page
    assert page.terminate() == 0, "".join(page.stderr_lines[-30:])


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="stqa-chromium-")  # a fresh profile each time: no state carried over
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1700"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(TIMEOUT_S)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, css: str, timeout: float = TIMEOUT_S):
    """The first element matching ``css`` once it exists and is shown."""
    def found(d):
        shown = [e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        return shown[0] if shown else False
    return WebDriverWait(driver, timeout).until(found, f"no visible {css} within {timeout} s")


def fill_and_ask(driver, web: WebProcess, video: Path, question: str, candidates: str = "") -> None:
    driver.get(web.url)
    wait_for(driver, "#stqa-ask")
    driver.find_element(By.CSS_SELECTOR, "#stqa-video input[type=file]").send_keys(str(video))
    wait_for(driver, "#stqa-video .file-preview, #stqa-video table")  # the upload has landed
    driver.find_element(By.CSS_SELECTOR, "#stqa-question textarea").send_keys(question)
    if candidates:
        driver.find_element(By.CSS_SELECTOR, "#stqa-candidates textarea").send_keys(candidates)
    driver.find_element(By.CSS_SELECTOR, "#stqa-ask").click()


def requested_urls(driver) -> set[str]:
    """Every URL the browser requested since the last call (from Chromium's performance log)."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return urls


def test_upload_ask_and_read_the_answer(web, browser):
    fill_and_ask(browser, web, EXAMPLES / EXAMPLE["video"], EXAMPLE["question"], ", ".join(EXAMPLE["candidates"]))
    answer = wait_for(browser, "#stqa-answer h2")
    assert answer.text.strip() == EXAMPLE["truth"]
    details = browser.find_element(By.CSS_SELECTOR, "#stqa-answer").text
    assert "confidence" in details and "task action (inferred from the question)" in details
    bars = browser.find_element(By.CSS_SELECTOR, "#stqa-topk").text
    assert all(candidate in bars for candidate in EXAMPLE["candidates"]), bars
    assert "total" in wait_for(browser, "#stqa-timings").text
    strip = wait_for(browser, "#stqa-picture img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", strip) > 600
    wait_for(browser, "#stqa-plot img")
    if os.environ.get("STQA_WEB_SCREENSHOT"):
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(os.environ["STQA_WEB_SCREENSHOT"])

    # Offline by construction: every request went to the page's own host (or never left the browser).
    page_host = urlsplit(web.url).netloc
    urls = requested_urls(browser)
    assert any(urlsplit(u).netloc == page_host for u in urls), "the network log saw no request at all"
    foreign = sorted(u for u in urls
                     if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).netloc != page_host)
    assert not foreign, f"the page fetched from elsewhere: {foreign[:10]}"


def test_a_broken_video_is_a_sentence_on_the_page(web, browser, tmp_path):
    broken = tmp_path / "broken.gif"
    broken.write_bytes((EXAMPLES / EXAMPLE["video"]).read_bytes()[:300])
    fill_and_ask(browser, web, broken, "what color is the growing shape ?")
    toast = WebDriverWait(browser, TIMEOUT_S).until(
        lambda d: next((e for e in d.find_elements(By.XPATH, "//*[contains(text(), 'The server could not answer')]")
                        if e.is_displayed()), False),
        "no error message on the page")
    assert "video rejected" in toast.text and "Traceback" not in browser.page_source
