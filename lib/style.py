"""One figure style for the whole book: a seaborn theme, a colour-blind-safe palette, and one
fixed colour per flip probability q and per noise level sigma, the same in every chapter.

Every chapter calls :func:`use` once; plotting code asks :func:`q_colour` / :func:`sigma_colour`
for the colour of a curve, so q = 0.1 is drawn in the same colour in chapters 5 to 9 and
sigma = 0.5 in the same colour in chapters 1 and 2. Roles that recur across chapters (an
undefended model, an attack, a reference from a paper) have fixed colours in :data:`ROLE`.
"""

from __future__ import annotations

import numpy as np
import seaborn as sns

__all__ = ["use", "q_colour", "sigma_colour", "image_rows", "ROLE", "PALETTE", "Q_RANGE"]

PALETTE = sns.color_palette("colorblind")  # ten colours, safe for the common colour-vision deficiencies
Q_RANGE = (5e-4, 0.45)  # the flip probabilities the book draws; q outside is clipped to the ends
_Q_MAP = sns.color_palette("viridis", as_cmap=True)  # perceptually uniform, readable in grey
_SIGMA_MAP = sns.color_palette("flare", as_cmap=True)
_SIGMA_FIXED = {0.12: PALETTE[2], 0.25: PALETTE[0], 0.5: PALETTE[1], 1.0: PALETTE[3]}

ROLE = {
    "undefended": PALETTE[3],  # the undefended model, attacked exactly
    "attack": PALETTE[1],  # heuristic attacks (upper bounds on robustness)
    "reference": "0.35",  # a number or curve taken from a paper
    "chance": "0.2",  # the constant classifier / chance level
}


def use() -> None:
    """Set the book's matplotlib style: seaborn's whitegrid theme and colour-blind palette, at a
    size that reads well in the rendered HTML."""
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        palette=PALETTE,
        font_scale=0.85,
        rc={
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "axes.titlesize": "medium",
            "legend.frameon": False,
            "lines.linewidth": 1.6,
        },
    )


def q_colour(q: float) -> tuple[float, float, float, float]:
    """The colour of flip probability ``q``: viridis at the position of log q in :data:`Q_RANGE`
    (dark for small q, yellow-green for large), so any q gets the same colour in every figure."""
    qf = float(q)
    if not (0.0 < qf < 1.0):
        raise ValueError(f"q must lie in (0, 1); got {q!r}")
    lo, hi = np.log(Q_RANGE[0]), np.log(Q_RANGE[1])
    pos = float(np.clip((np.log(qf) - lo) / (hi - lo), 0.0, 1.0))
    return tuple(_Q_MAP(0.05 + 0.85 * pos))  # the ends of viridis are too dark / too pale on white


def sigma_colour(sigma: float) -> tuple[float, ...]:
    """The colour of noise level ``sigma``: a fixed palette colour for Cohen et al.'s levels
    (0.12, 0.25, 0.5, 1.0), else a colour of the "flare" map at the position of log sigma."""
    s = float(sigma)
    if not (s > 0.0 and np.isfinite(s)):
        raise ValueError(f"sigma must be a positive number; got {sigma!r}")
    for level, colour in _SIGMA_FIXED.items():
        if np.isclose(s, level):
            return tuple(colour)
    pos = float(np.clip((np.log(s) - np.log(0.05)) / (np.log(4.0) - np.log(0.05)), 0.0, 1.0))
    return tuple(_SIGMA_MAP(pos))


def image_rows(rows, labels, figsize=(6.5, 3.6)):
    """A figure of grey images in rows, one label per row: ``rows`` is a list of tensors of equal
    shape (m, 1, H, W) with values in [0, 1], tiled by torchvision's ``make_grid`` (2-pixel white
    gaps)."""
    import matplotlib.pyplot as plt
    import torch
    from torchvision.utils import make_grid

    if len(rows) != len(labels) or not rows:
        raise ValueError(
            f"rows and labels must be non-empty and of one length; got {len(rows)} and {len(labels)}"
        )
    m, _, h, _ = rows[0].shape
    grid = make_grid(torch.cat(list(rows)), nrow=m, padding=2, pad_value=1.0)
    fig, ax = plt.subplots(figsize=figsize)
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray")
    ax.set_yticks([2 + h // 2 + (h + 2) * i for i in range(len(rows))], labels)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    return fig
