"""Fixtures of the browser tests; the machinery is in browserkit.py."""

from __future__ import annotations

import pytest

from browserkit import Browsers, require_browser


@pytest.fixture
def browsers(tmp_path) -> Browsers:
    require_browser()
    b = Browsers(tmp_path)
    yield b
    b.quit_all()
