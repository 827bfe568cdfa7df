"""One headless Chromium for the browser tests (Debian's chromium + chromium-driver, installed by
`make test`), and screenshots under test-artifacts/ui/."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium. Both paths are given so Selenium Manager never tries to download a browser."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: `make test` installs them "
                    "(apt-get install -y --no-install-recommends chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    driver = item.funcargs.get("browser")  # absent when the browser itself failed to start
    if report.when == "call" and report.failed and driver is not None:
        driver.save_screenshot(str(ARTIFACTS / f"FAILED-{item.name}.png"))
        (ARTIFACTS / f"FAILED-{item.name}.console.txt").write_text(
            "\n".join(entry["message"] for entry in driver.get_log("browser")))
    return report


def wait(driver: webdriver.Chrome, condition, timeout_s: float = 60.0, message: str = ""):
    """Poll `condition(driver)` until it returns something truthy (which is returned)."""
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition, message)


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    """The whole page, not only the window: the window grows to the page's height for the shot."""
    size = driver.get_window_size()
    width, height = size["width"], size["height"]
    driver.set_window_size(width, max(height, driver.execute_script("return document.documentElement.scrollHeight")))
    try:
        driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    finally:
        driver.set_window_size(width, height)


def no_page_errors(driver: webdriver.Chrome) -> None:
    """The page logged no error (a failed script, a CSP violation, a 5xx on a static file)."""
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
