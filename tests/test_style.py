"""The book's figure style: one colour per q and per sigma, the same wherever it is asked for."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from lib import style


def test_each_q_has_one_colour_and_neighbours_differ():
    qs = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4]
    cols = [style.q_colour(q) for q in qs]
    assert cols == [style.q_colour(q) for q in qs]  # a pure function of q
    for a, b in zip(cols, cols[1:]):
        assert np.abs(np.subtract(a[:3], b[:3])).sum() > 0.02  # neighbours on the grid differ
    assert style.q_colour(1e-9) == style.q_colour(style.Q_RANGE[0])  # clipped to the range


def test_fixed_sigma_colours_are_distinct_palette_colours():
    levels = [0.12, 0.25, 0.5, 1.0]
    cols = [style.sigma_colour(s) for s in levels]
    assert len({tuple(np.round(c, 6)) for c in cols}) == 4
    assert style.sigma_colour(0.5) == style.sigma_colour(0.5000000001)
    assert len(style.sigma_colour(0.7)) == 4  # any other sigma gets a colour of the map


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, float("nan")])
def test_bad_q_names_the_argument(bad):
    with pytest.raises(ValueError, match="q"):
        style.q_colour(bad)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_sigma_names_the_argument(bad):
    with pytest.raises(ValueError, match="sigma"):
        style.sigma_colour(bad)


def test_use_sets_the_palette():
    import matplotlib.pyplot as plt

    style.use()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    assert matplotlib.colors.to_rgb(cycle[0]) == pytest.approx(tuple(style.PALETTE[0]))


def test_image_rows_tiles_one_row_per_label():
    import torch

    rows = [torch.zeros(5, 1, 28, 28), torch.ones(5, 1, 28, 28)]
    fig = style.image_rows(rows, ["clean", "noisy"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["clean", "noisy"]
    img = ax.images[0].get_array()
    assert img.shape[:2] == (2 + 2 * 30, 2 + 5 * 30)  # make_grid: 2-pixel gaps around 28-pixel tiles
    np.testing.assert_allclose(ax.get_yticks(), [16, 46])  # each label at its row's centre
    with pytest.raises(ValueError, match="labels"):
        style.image_rows(rows, ["one"])
