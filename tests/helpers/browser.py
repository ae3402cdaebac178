"""Headless Chromium (Debian chromium + chromedriver) for page tests, optionally with the network cut off."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1100")
# Everything but loopback goes to a dead proxy and resolves nowhere: a closed network, as on a locked LAN.
OFFLINE_FLAGS = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")


def chrome(offline: bool = False) -> Any:
    """A new headless Chromium driver (skips, or fails under CI, when Chromium is not installed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = (f"{', '.join(missing)} not installed: apt-get install -y chromium chromium-driver "
                   "(.ci/run installs them)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = (*CHROME_FLAGS, *(OFFLINE_FLAGS if offline else ()))
    for flag in (*flags, f"--user-data-dir={tempfile.mkdtemp(prefix='ss-chrome-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@contextlib.contextmanager
def browser_session(offline: bool = False) -> Iterator[Any]:
    """A driver that is quit on exit."""
    driver = chrome(offline)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll until `condition()` is truthy and return it, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")
