"""Multi-class sets of segmentations from sampled outputs: CONSIGN and pixel-wise APS.

These methods do not fit the sublevel-set interface of :mod:`segcp.methods` (their sets are
sets of *segmentations*, not sets of pixels): each image gets a 0/1 loss that is monotone
in λ, a per-image score λ*_i (the smallest λ whose set contains the truth up to β), and
λ̂ is the conformal quantile of the scores (``segcp.calibration.conformal_quantile``).

- :mod:`~segcp.multiclass.agreement` the loss: agreement up to β, input checks;
- :mod:`~segcp.multiclass.consign`   CONSIGN: SVD box, exact-certificate membership search,
  λ* by bracketing + bisection, sampling;
- :mod:`~segcp.multiclass.aps`       pixel-wise APS on the mean softmax (exact scores), sampling;
- :mod:`~segcp.multiclass.estimators` ``Consign`` and ``PixelAPS`` (sklearn-style calibrate,
  ``lambda_``, ``sample``, ``to_dict``);
- :mod:`~segcp.multiclass.diversity` Chao1, sampled empirical coverage, mean |Pearson|;
- :mod:`~segcp.multiclass.reference` the reference procedure (λ grid of 0.01, full
  re-optimisation per step) for the speed comparison;
- :mod:`~segcp.multiclass.jobs`      data directories (``samples/``) for the CLI;
- :mod:`~segcp.multiclass.toy`       SYNTHETIC sampled outputs for tests and the demo.
"""
