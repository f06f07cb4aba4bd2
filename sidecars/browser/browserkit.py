"""Headless Chromium for the sign-in page tests (sidecars/browser): the system browser and driver
(Debian `chromium`, `chromium-driver`), driven by Selenium with the driver path
given explicitly, so Selenium Manager never runs and nothing is downloaded.

Each browser gets its own throwaway profile (its own IndexedDB, so its own
browser keys) and, when asked, a virtual WebAuthn authenticator (CTAP2,
internal transport, resident keys, user verification that always succeeds):
the WebDriver extension of WebAuthn Level 2 §11, which chromedriver implements."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SIDECARS = Path(__file__).resolve().parent.parent
ROOT = SIDECARS.parent
PAGE_DIR = ROOT / "node" / "src" / "oidc" / "page"

CHROMIUM = os.environ.get("DIDMESH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DIDMESH_CHROMEDRIVER", "/usr/bin/chromedriver")


def require_browser() -> None:
    """Fail (never skip) with the packages to install when the browser is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: the browser tests need Debian's Chromium and its driver; "
            "install them with `apt-get install -y chromium chromium-driver` "
            "(or point DIDMESH_CHROMIUM / DIDMESH_CHROMEDRIVER at another build)",
            pytrace=False,
        )


def bin_dir() -> Path:
    return Path(os.environ.get("DIDMESH_BIN_DIR", ROOT / "target" / "debug"))


def require_bin(name: str) -> Path:
    path = bin_dir() / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it first (cargo build -p didmesh-node -p didmesh-client)", pytrace=False)
    return path


class Browsers:
    """Starts browsers on demand and always quits them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.drivers = []

    def new(self, authenticator: bool = True):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.virtual_authenticator import (
            Protocol,
            Transport,
            VirtualAuthenticatorOptions,
        )

        require_browser()
        profile = self.tmp / f"profile{len(self.drivers)}"
        profile.mkdir()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1000,1200",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=CHROMEDRIVER, log_output=str(self.tmp / f"chromedriver{len(self.drivers)}.log"))
        driver = webdriver.Chrome(service=service, options=options)
        self.drivers.append(driver)
        driver.set_script_timeout(30)
        if authenticator:
            driver.add_virtual_authenticator(
                VirtualAuthenticatorOptions(
                    protocol=Protocol.CTAP2,
                    transport=Transport.INTERNAL,
                    has_resident_key=True,
                    has_user_verification=True,
                    is_user_consenting=True,
                    is_user_verified=True,
                )
            )
        return driver

    def quit_all(self) -> None:
        for d in self.drivers:
            try:
                d.quit()
            except Exception:  # a crashed browser must not hide the test's own failure
                pass
        self.drivers.clear()
