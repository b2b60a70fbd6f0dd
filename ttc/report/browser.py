"""A real browser for the report: headless Chromium from Debian's packages, driven by Selenium with the
network switched off. The report's tests and the README's screenshots use it.

    python -m ttc.report.browser --ensure     # install chromium and chromium-driver when missing

The install is Debian's `apt-get` (as root, what CI runs as); it says what it does, and does nothing
when both programs are already there.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

PACKAGES = ("chromium", "chromium-driver")


class BrowserUnavailable(RuntimeError):
    """No Chromium here, and it cannot be installed (not root, or no apt-get)."""


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def ensure_chromium(log=lambda m: print(m, file=sys.stderr, flush=True)) -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing Debian's packages first when they are missing."""
    found = chromium_paths()
    if found:
        return found
    if not shutil.which("apt-get"):
        raise BrowserUnavailable(f"chromium is not installed and there is no apt-get to install {PACKAGES}")
    if os.geteuid() != 0:
        raise BrowserUnavailable(f"chromium is not installed; as root: apt-get install -y {' '.join(PACKAGES)}")
    log(f"[ttc test setup] installing {' and '.join(PACKAGES)} from Debian for the report's browser tests (once)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # A fresh machine has no package lists yet: fetch them, then install.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BrowserUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr[-2000:]}")
    found = chromium_paths()
    if not found:
        raise BrowserUnavailable(f"{PACKAGES} installed, yet chromium or chromedriver is not on PATH")
    log("[ttc test setup] chromium ready")
    return found


@contextlib.contextmanager
def offline_browser(width: int = 1400, height: int = 1000) -> Iterator["object"]:
    """A headless Chromium (a Selenium driver) whose network is off: a page that needed anything from
    outside would show it as failed requests in the browser log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--allow-file-access-from-files"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                               {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver
    finally:
        driver.quit()


def page_errors(driver) -> list[str]:
    """JavaScript errors and failed loads the page has logged since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def open_file(driver, path: str | Path) -> None:
    driver.get(Path(path).resolve().as_uri())


def main() -> int:
    parser = argparse.ArgumentParser(description="the report's browser (headless Chromium)")
    parser.add_argument("--ensure", action="store_true", help="install chromium and chromium-driver when missing")
    args = parser.parse_args()
    if args.ensure:
        try:
            ensure_chromium()
        except BrowserUnavailable as exc:
            print(f"[ttc test setup] {exc}; the browser tests will be skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
