"""Skip markers for optional dependencies (trl's ``testing_utils`` pattern)."""

from __future__ import annotations

import importlib.util

import pytest

require_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="needs the ray extra: pip install 'synthgen[ray]'")
