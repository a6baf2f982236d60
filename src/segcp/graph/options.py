"""The named choices of the random walk (no scipy: family declarations import them at start-up)."""

#: How β relates to the graph's distances: as given, or relative to their median / mean.
BETA_SCALES = ("absolute", "median", "mean")
#: How the kNN graph is symmetrised before the walk.
SYMMETRIZE = ("none", "max", "mean", "min")
#: Where the graph, the diffusion and the encoder run (``cpu``: numpy/scipy; ``cuda``: torch on the GPU).
DEVICES = ("cpu", "cuda", "auto")
