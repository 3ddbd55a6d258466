"""Shared fixtures. The exact enumeration helpers live in lib.enumeration (chapter 3 uses them too)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.enumeration import all_labellings, base_votes, noise_probabilities  # noqa: E402,F401


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
