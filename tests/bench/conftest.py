"""The swarm benchmark's tests: root and ``ip netns`` are needed; ``bench`` must import."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # ``bench`` is a top-level package of the repository, not of the installed project.
    sys.path.insert(0, str(REPO_ROOT))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "network namespaces and tc need root"
    elif shutil.which("ip") is None or shutil.which("tc") is None:
        reason = "iproute2 (ip, tc) is not installed"
    if reason is None:
        return
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.skip(reason=reason))
