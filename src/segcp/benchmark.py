"""`segcp benchmark`: the papers' tables, ablations and figures in one cached command.

A TOML config (:mod:`segcp.engine.config`) names tasks (data directories or built-in
synthetic data), methods (``segcp compare``'s spec syntax, tuned rows allowed), α, splits,
calibration sizes, ablations and the sets-of-segmentations settings. The plan
(:mod:`segcp.engine.run`) runs against a content-keyed cache
(:mod:`segcp.engine.cache`), so a second run recomputes only what is new; the report
(:mod:`segcp.report.benchmark`, :mod:`segcp.report.html`, :mod:`segcp.report.figures`)
is one self-contained HTML file plus Markdown, PNG figures and tidy CSV/JSON results.
"""

from segcp.engine.config import BenchmarkConfig, load_config, parse_config
from segcp.report.benchmark import run_benchmark

__all__ = ["BenchmarkConfig", "load_config", "parse_config", "run_benchmark"]
