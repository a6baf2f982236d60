"""The named choices of ``segcp train`` as plain data, importable without torch.

:data:`PRESETS` (the ``--preset`` settings) and :data:`LOSSES` (the ``--loss`` names) are
defined here once; :mod:`segcp.harness.models.train` and :mod:`segcp.harness.models.losses`
use them, and the command line lists them in ``segcp train --help`` and in its errors
without importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOSSES", "PRESETS"]

#: Named settings. ``cpu`` = the defaults of :class:`~segcp.harness.models.train.TrainConfig`
#: (chosen by measurement on 2 CPU cores, see docs/models.md); ``paper`` = the RW-CP paper's
#: full-size setting.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"size": 128, "width": 8, "epochs": None, "steps": 1100, "batch_size": 16},
    "paper": {"size": 512, "width": 16, "epochs": 200, "steps": None, "batch_size": 16, "warmup_epochs": 5.0},
}

#: The loss names ``segcp train --loss`` accepts (default first): cross-entropy and nnU-Net's
#: Dice + cross-entropy (:mod:`segcp.harness.models.losses`).
LOSSES = ("ce", "dice_ce")
