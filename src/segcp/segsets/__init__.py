"""The mathematics of sets of segmentations from sampled outputs: CONSIGN and pixel-wise APS.

The set families themselves are :mod:`segcp.methods.consign` and :mod:`segcp.methods.aps`
(behind the same interface and estimator as every other family); this package holds what
they compute:

- :mod:`~segcp.segsets.agreement` the loss: agreement of a segmentation with a label map
  up to β, decided exactly (the inputs are validated by :mod:`segcp.cases`);
- :mod:`~segcp.segsets.consign`   CONSIGN: SVD, box, exact-certificate membership search,
  λ* by bracketing + bisection, sampling;
- :mod:`~segcp.segsets.aps`       pixel-wise APS on the mean softmax (exact scores), sampling;

Their diversity metrics (Chao1, SEC, correlation) are in :mod:`segcp.metrics.diversity`.
"""
