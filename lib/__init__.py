"""Certified robustness by randomized smoothing: the library behind the book.

One module per idea:

* :mod:`lib.smoothing` - the generic guarantee (Definition 1) and its instances (chapter 1);
* :mod:`lib.gaussian` - Gaussian smoothing with sampling, CERTIFY / PREDICT (chapter 2);
* :mod:`lib.labelflip` - KL and tight label-flip certificates, the certification pipeline (3, 5);
* :mod:`lib.neyman_pearson` - the likelihood-ratio levels behind the tight certificate (3);
* :mod:`lib.least_squares` - training as a linear function of the labels (4);
* :mod:`lib.chernoff` - the Chernoff bounds that remove sampling (5);
* :mod:`lib.fused` - one-pass float64 kernels of those bounds and the warm starts' histograms (5, 9);
* :mod:`lib.montecarlo` - exact Monte Carlo votes of the least-squares vote by sparse updates (5);
* :mod:`lib.style` - the book's one figure style, a fixed colour per q and per sigma;
* :mod:`lib.profiles` - the ``ci`` / ``full`` parameter profiles of the book.
"""

__version__ = "0.1.0"
