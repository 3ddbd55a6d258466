"""Shared fixtures. The exact enumeration helpers live in lib.enumeration (chapter 3 uses them too);
they are re-exported here for the tests that import them from conftest."""

from __future__ import annotations

import numpy as np
import pytest

from lib.enumeration import all_labellings, base_votes, noise_probabilities

__all__ = ["all_labellings", "base_votes", "noise_probabilities"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
