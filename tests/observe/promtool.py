"""promtool (Debian's prometheus package): skip without it, except in CI where it must be."""

from __future__ import annotations

import os
import shutil

import pytest


def tool(name: str, package: str) -> str:
    """The path of `name`; a failure in CI (where .ci/run installs `package`), else a skip."""
    binary = shutil.which(name)
    if binary is None:
        if os.environ.get("CHAOSEMERGENCE_REQUIRE_PROMETHEUS") or os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run installs Debian's {package}")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return binary
