"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) using the page like a person would."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request

import numpy as np
import PIL.Image
import pytest

from saferclip_diffusers.demo.engine import GenerationRequest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 180  # how long to wait for the page or for images before failing (slow shared CPUs)
IMAGES_JS = """
const out = {};
for (const id of ["original-gallery", "safe-gallery"]) {
  out[id] = [...document.querySelectorAll(`#${id} img`)]
    .filter(im => im.complete && im.naturalWidth > 0)
    .map(im => { const r = im.getBoundingClientRect();
                 return {src: im.src, w: im.naturalWidth, x: r.x, y: r.y, width: r.width, height: r.height}; });
}
return out;
"""


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Chromium is needed for this test: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1400",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_type_a_prompt_click_generate_and_see_both_images(browser, launched_app, tiny_engine, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, url, _ = launched_app
    browser.get(url)
    box = WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea"))
    box.send_keys("a red fox sleeping in autumn leaves, watercolor")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    shown = WebDriverWait(browser, WAIT_S).until(
        lambda d: (lambda r: r if r["original-gallery"] and r["safe-gallery"] else False)(
            d.execute_script(IMAGES_JS)
        )
    )
    shot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("SAFERCLIP_DEMO_SCREENSHOT"):  # keep a copy where CI or a person can look at it
        shutil.copy(shot, os.environ["SAFERCLIP_DEMO_SCREENSHOT"])

    # The page shows the right pair: the seed it reports regenerates exactly the images it serves.
    browser.find_element(
        By.XPATH, "//*[normalize-space(text())='More settings']"
    ).click()  # open the accordion
    seed_box = WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.CSS_SELECTOR, "#seed input"))
    seed = int(seed_box.get_attribute("value"))
    expected = tiny_engine.generate(
        GenerationRequest(
            "a red fox sleeping in autumn leaves, watercolor",
            "",
            seed,
            tiny_engine.defaults.steps,
            7.5,
            32,
            32,
            1,
            1.0,
        )
    )
    for gallery, image in (
        ("original-gallery", expected.original.images[0]),
        ("safe-gallery", expected.safe.images[0]),
    ):
        (served,) = shown[gallery]
        with urllib.request.urlopen(served["src"]) as response:
            got = PIL.Image.open(response).convert("RGB")
        np.testing.assert_array_equal(np.asarray(got), np.asarray(image))
        # ... and the screenshot really has an image where the gallery draws it, not a blank box.
        box_px = (
            PIL.Image.open(shot)
            .convert("RGB")
            .crop(
                (
                    int(served["x"]),
                    int(served["y"]),
                    int(served["x"] + served["width"]),
                    int(served["y"] + served["height"]),
                )
            )
        )
        assert served["width"] > 100 and served["height"] > 100
        assert np.asarray(box_px, dtype=float).std() > 10
    assert (
        f"#1 · seed {seed} · safe: no detections"
        in browser.find_element(By.CSS_SELECTOR, "#safe-gallery").text
    )
