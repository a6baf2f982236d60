"""`segcp benchmark`: the papers' tables, ablations and figures in one cached command.

A TOML config (:mod:`segcp.benchmark.config`) names tasks (data directories or built-in
synthetic data), methods (``segcp compare``'s spec syntax, tuned rows allowed), α, splits,
calibration sizes, ablations and the sets-of-segmentations settings. The plan
(:mod:`segcp.benchmark.runner`) runs against a content-keyed cache
(:mod:`segcp.benchmark.cache`), so a second run recomputes only what is new; the report
(:mod:`segcp.benchmark.run`, :mod:`segcp.benchmark.report`, :mod:`segcp.benchmark.figures`)
is one self-contained HTML file plus Markdown, PNG figures and tidy CSV/JSON results.
"""

from segcp.benchmark.config import BenchmarkConfig, load_config, parse_config
from segcp.benchmark.run import run_benchmark

__all__ = ["BenchmarkConfig", "load_config", "parse_config", "run_benchmark"]
