"""Certified robustness by randomized smoothing: the library behind the book.

One module per idea:

* :mod:`lib.smoothing` - the generic guarantee (Definition 1) and its instances (chapter 1);
* :mod:`lib.gaussian` - Gaussian smoothing with sampling, CERTIFY / PREDICT (chapter 2);
* :mod:`lib.lipschitz` - the Lipschitz view of Gaussian smoothing and exact smoothed scores (2);
* :mod:`lib.projected` - projected base classifiers whose Gaussian noise has an exact law (2);
* :mod:`lib.pgd` - l2 attacks beside the Gaussian certificate (2);
* :mod:`lib.labelflip` - KL and tight label-flip certificates, the certification pipeline (3, 5);
* :mod:`lib.neyman_pearson` - the likelihood-ratio levels behind the tight certificate (3);
* :mod:`lib.enumeration` - exact label-noise laws on tiny problems, by enumeration (3);
* :mod:`lib.least_squares` - training as a linear function of the labels (4);
* :mod:`lib.partition` - deterministic partition-aggregation certificates (SS-DPA, FA) and attacks;
* :mod:`lib.chernoff` - the Chernoff bounds that remove sampling (5);
* :mod:`lib.fused` - one-pass float64 kernels of those bounds and the warm starts' histograms (5, 9);
* :mod:`lib.montecarlo` - exact Monte Carlo votes of the least-squares vote by sparse updates (5);
* :mod:`lib.data` - the data sets, offline where possible, verified by checksum (2, 4-9);
* :mod:`lib.features` - label-free feature maps: PCA whitening, networks trained on other
  classes and their embeddings (4-9);
* :mod:`lib.training` - the small CNN, Gaussian-noise training, the weight cache (2, 6, 7);
* :mod:`lib.attacks` - label-flip attacks, the upper bounds beside the certificates (6-9);
* :mod:`lib.evaluation` - attacked accuracy, the attacks-versus-certificates check, the
  certified-curves figure (6-9);
* :mod:`lib.text` - IMDB reviews, word vectors and sentence embeddings (8);
* :mod:`lib.feature_study` - feature maps compared at radii given as a fraction of n (8);
* :mod:`lib.style` - the book's one figure style, a fixed colour per q and per sigma;
* :mod:`lib.profiles` - the ``ci`` / ``full`` parameter profiles of the book;
* :mod:`lib.bench` - the speed benchmarks of ``make bench``;
* ``lib._checks`` - the argument checks the certificates share.
"""

__version__ = "0.1.0"
