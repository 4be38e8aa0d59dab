"""The page at `/`, in real browsers: Debian's Chromium (headless, driven by Selenium) and Firefox
ESR (headless, over Marionette).

Screenshots go to $KITH_ARTIFACTS (default: test-artifacts/ in the repository), which CI keeps."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

import kith
from conftest import REPOSITORY, Server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

IMAGES = REPOSITORY / "Tests" / "Fixtures" / "images"
ARTIFACTS = pathlib.Path(os.environ.get("KITH_ARTIFACTS", REPOSITORY / "test-artifacts")) / "page"


@pytest.fixture()
def browser():
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("chromium and chromium-driver are missing: tools/setup installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def console_errors(driver) -> list:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_search_classify_browse_evaluate(server: Server, client: kith.Client, browser, tmp_path) -> None:
    client.create_index("page", model="resnet18-random")
    client.create_index("page-vectors", dimension=4)
    photos = REPOSITORY / "samples" / "photos"  # copied by the set-up from scikit-image
    added = client.add_images(
        "page",
        [
            IMAGES / "coffee-256.png",
            IMAGES / "chelsea.jpg",
            photos / "chelsea.png",
            photos / "coffee.png",
            IMAGES / "camera-grey.png",
        ],
        labels=["cup", "cat", "cat", "cup", "camera"],
    )
    coffee = int(added.ids[0])
    wait = WebDriverWait(browser, 60)
    browser.get(server.url + "/")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#index option[value=page]"))
    Select(browser.find_element(By.ID, "index")).select_by_value("page")
    wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "5 items"))

    # An uploaded photo's first neighbour is itself, with its thumbnail.
    browser.find_element(By.ID, "file").send_keys(str(IMAGES / "coffee-256.png"))
    first = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#results li button"))
    assert int(first.get_attribute("data-id")) == coffee
    score = float(first.find_element(By.CLASS_NAME, "meta").text.rsplit("·", 1)[1])
    assert score == pytest.approx(1, abs=1e-3)
    image = first.find_element(By.TAG_NAME, "img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0)
    browser.save_screenshot(str(ARTIFACTS / "1-search.png"))

    # Classify it with the default head, auto: the page says which head and space answered.
    browser.find_element(By.ID, "classify").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "classify-note"), "backbone space"))
    note = browser.find_element(By.ID, "classify-note").text
    assert note.startswith("Head ") and "auto" in note, note

    # Classify it with the prototype head: bars, best first.
    Select(browser.find_element(By.ID, "head")).select_by_visible_text("prototype")
    browser.find_element(By.ID, "classify").click()
    top = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#probabilities li span"))
    assert top.text == "cup"
    browser.save_screenshot(str(ARTIFACTS / "2-classify.png"))

    # A click on a result searches for its neighbours (never itself).
    browser.find_elements(By.CSS_SELECTOR, "#results li button")[1].click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "results-note"), "never itself), backbone space"))

    # Labels and the items of one.
    chip = wait.until(
        lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "#label-list button") if b.text.startswith("cat")][0]
    )
    assert chip.text == "cat (2)"
    chip.click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#label-items li")) == 2)

    # A few-shot evaluation, watched to its chart.
    for field, value in [("way", "2"), ("shot", "1"), ("queries", "1"), ("episodes", "20")]:
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "evaluate").click()
    chart = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#eval-chart svg"))
    browser.execute_script("arguments[0].scrollIntoView()", chart)
    assert browser.find_element(By.ID, "eval-progress").get_attribute("value") == "20"
    browser.save_screenshot(str(ARTIFACTS / "3-evaluate.png"))

    # A failed upload leaves nothing of the last query on screen, and nothing to classify.
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait.until(lambda d: d.find_element(By.ID, "message").is_displayed())
    assert "unsupported_format" in browser.find_element(By.ID, "message").text
    assert browser.find_elements(By.CSS_SELECTOR, "#results li, #query-preview img, #probabilities li") == []
    assert browser.find_element(By.ID, "classify").get_attribute("disabled") is not None
    assert browser.find_element(By.ID, "results-note").text.startswith("Choose an image")

    # Another index: the previous query, its neighbours and its class bars go.
    browser.find_element(By.ID, "file").send_keys(str(IMAGES / "chelsea.jpg"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li"))
    browser.find_element(By.ID, "classify").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#probabilities li"))
    Select(browser.find_element(By.ID, "index")).select_by_value("page-vectors")
    wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "vectors of your own"))
    assert browser.find_elements(By.CSS_SELECTOR, "#results li, #query-preview img, #probabilities li") == []
    assert browser.find_element(By.ID, "classify").get_attribute("disabled") is not None
    assert browser.find_element(By.ID, "file").get_attribute("disabled") is not None
    assert browser.find_element(By.ID, "eval-chart").text == ""

    browser.set_window_size(420, 1000)
    browser.save_screenshot(str(ARTIFACTS / "4-narrow.png"))
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    # The failed upload's 400 is the one expected console error.
    assert all("400" in e["message"] for e in console_errors(browser)), console_errors(browser)
    client.drop_index("page")
    client.drop_index("page-vectors")


def test_the_page_without_indexes(browser) -> None:
    """The empty state: nothing to search, classify or evaluate, and the page says how to start."""
    server = Server()
    try:
        browser.get(server.url + "/")
        WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "summary"), "No indexes yet"))
        for control in ["file", "classify", "evaluate"]:
            assert browser.find_element(By.ID, control).get_attribute("disabled") is not None, control
        assert console_errors(browser) == []
    finally:
        server.stop()


def test_the_page_asks_for_the_token_once(tmp_path, browser) -> None:
    token = tmp_path / "token"
    token.write_text("page-token")
    server = Server(["--token-file", str(token), "--reads-require-token"])
    try:
        with kith.Client(server.url, token="page-token") as client:
            client.create_index("guarded", dimension=4)
        browser.get(server.url + "/")
        alert = WebDriverWait(browser, 30).until(EC.alert_is_present())
        alert.send_keys("page-token")
        alert.accept()
        WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "summary"), "vectors of your own"))
        browser.save_screenshot(str(ARTIFACTS / "5-token.png"))
        # The failed first call before the token was given is the one expected console error.
        assert all("401" in e["message"] for e in console_errors(browser))
    finally:
        server.stop()


def test_firefox(server: Server, client: kith.Client, tmp_path) -> None:
    """The same page in Debian's Firefox ESR, driven over Marionette (Debian has no geckodriver):
    search, thumbnail, classify, evaluate, with no JavaScript error in Firefox's console."""
    marionette = pytest.importorskip("marionette_driver.marionette")
    from marionette_driver import By as MBy
    from marionette_driver import Wait

    if not shutil.which("firefox-esr"):
        pytest.fail("firefox-esr is missing: tools/setup installs it")
    client.create_index("page-ff", model="resnet18-random")
    ids = client.add_images(
        "page-ff",
        [IMAGES / "coffee-256.png", IMAGES / "chelsea.jpg", IMAGES / "camera-grey.png"],
        labels=["cup", "cat", "camera"],
    ).ids
    log = tmp_path / "gecko.log"
    firefox = marionette.Marionette(
        bin=shutil.which("firefox-esr"),
        headless=True,
        startup_timeout=120,
        port=2831,
        workspace=str(tmp_path),
        gecko_log=str(log),
        prefs={"devtools.console.stdout.content": True},
    )
    try:
        firefox.start_session()
        firefox.navigate(server.url + "/")
        wait = Wait(firefox, timeout=60)
        wait.until(
            lambda f: f.execute_script(
                "return [...document.querySelectorAll('#index option')].some(o => o.value == 'page-ff')"
            )
        )
        firefox.execute_script(
            "const s = document.getElementById('index'); s.value = 'page-ff'; s.dispatchEvent(new Event('change'))"
        )
        wait.until(lambda f: "3 items" in f.find_element(MBy.ID, "summary").text)
        firefox.find_element(MBy.ID, "file").send_keys(str(IMAGES / "coffee-256.png"))
        first = wait.until(lambda f: (f.find_elements(MBy.CSS_SELECTOR, "#results li button") or [None])[0])
        assert int(first.get_attribute("data-id")) == int(ids[0]) and "1.0000" in first.text
        image = first.find_element(MBy.TAG_NAME, "img")
        wait.until(
            lambda f: (
                f.execute_script("return arguments[0].complete && arguments[0].naturalWidth", script_args=[image]) > 0
            )
        )
        firefox.find_element(MBy.ID, "classify").click()
        wait.until(lambda f: f.find_elements(MBy.CSS_SELECTOR, "#probabilities li"))
        assert firefox.find_element(MBy.CSS_SELECTOR, "#probabilities li span").text == "cup"
        import base64

        (ARTIFACTS / "6-firefox.png").write_bytes(base64.b64decode(firefox.screenshot()))
        assert firefox.find_element(MBy.ID, "message").get_attribute("hidden") is not None
    finally:
        firefox.delete_session()
        firefox.cleanup()
    errors = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "JavaScript error" in line or "Uncaught" in line
    ]
    assert errors == [], errors
    client.drop_index("page-ff")
