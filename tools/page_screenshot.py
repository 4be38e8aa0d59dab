"""Makes docs/page.jpg, the README's picture of the page: the default backbone on real photos.

A fresh `kith serve` (the release build) gets an index of the set-up's sample photos and the
committed test photos, labelled by what they show; headless Chromium searches it with a photo of
a cat and classifies it. Run after tools/setup:  .venv/bin/python tools/page_screenshot.py
"""

from __future__ import annotations

import io
import pathlib
import shutil
import sys
import time

from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPOSITORY / "clients" / "python"), str(REPOSITORY / "clients" / "python" / "tests")]

import kith  # noqa: E402
from conftest import Server  # noqa: E402

PHOTOS = REPOSITORY / "samples" / "photos"
FIXTURES = REPOSITORY / "Tests" / "Fixtures" / "images"
LABELLED = {
    "cat": [PHOTOS / "chelsea.png", FIXTURES / "chelsea-cmyk.jpg"],
    "cup": [PHOTOS / "coffee.png", FIXTURES / "coffee-256.png"],
    "horse": [PHOTOS / "horse.png", FIXTURES / "horse-alpha.png"],
    "rocket": [PHOTOS / "rocket.jpg", FIXTURES / "rocket-exif6.jpg"],
    "person": [PHOTOS / "astronaut.png", FIXTURES / "camera-grey.png"],
    "motorcycle": [PHOTOS / "motorcycle_left.png"],
    "eye": [PHOTOS / "retina.jpg"],
}


def main() -> None:
    server = Server()
    try:
        with kith.Client(server.url) as client:
            client.create_index("photos")  # the default backbone
            for label, files in LABELLED.items():
                client.add_images("photos", files, labels=[label] * len(files))
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"]:
            options.add_argument(argument)
        browser = webdriver.Chrome(
            options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
        )
        try:
            wait = WebDriverWait(browser, 60)
            browser.get(server.url + "/")
            Select(wait.until(lambda d: d.find_element(By.ID, "index"))).select_by_value("photos")
            wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "efficientnet-lite0"))
            browser.find_element(By.ID, "file").send_keys(str(FIXTURES / "chelsea.jpg"))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li img"))
            browser.find_element(By.ID, "classify").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#probabilities li"))
            time.sleep(1)  # the thumbnails' last paint; a picture for people, not a test
            png = browser.get_screenshot_as_png()
        finally:
            browser.quit()
    finally:
        server.stop()
    Image.open(io.BytesIO(png)).convert("RGB").save(REPOSITORY / "docs" / "page.jpg", quality=85)
    print("wrote docs/page.jpg")


if __name__ == "__main__":
    main()
