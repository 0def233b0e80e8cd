"""Settings a process reads from its environment, in one place for every layer."""
from __future__ import annotations

import os


def offline() -> bool:
    """ZOO_OFFLINE=1 (or true/yes/on): no download of zoo weights, published folders or encoder weights."""
    return os.environ.get("ZOO_OFFLINE", "").lower() in ("1", "true", "yes", "on")
