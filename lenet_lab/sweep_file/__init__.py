"""Sweep files: one TOML file per exercise, read into a validated `Sweep`.

- model: what a file holds (RunSettings, Distribution, Arm, Sweep) and the run checks;
- parse: finding, reading and checking a file, naming the file and key of every problem.
"""

from __future__ import annotations

from lenet_lab.sweep_file.model import (BUDGETS, CONFIG_FIELDS, FIELDS, MARGIN_DEFAULT, NETWORK_FIELDS,
                                        OBJECTIVES, Arm, Distribution, RunSettings, Sweep,
                                        specs_from)
from lenet_lab.sweep_file.parse import (bundled_dir, find_sweep, list_sweeps, load_sweep,
                                        load_sweeps, parse_sweep)

__all__ = ["BUDGETS", "CONFIG_FIELDS", "FIELDS", "MARGIN_DEFAULT", "NETWORK_FIELDS", "OBJECTIVES", "Arm",
           "Distribution", "RunSettings", "Sweep", "bundled_dir", "find_sweep", "list_sweeps",
           "load_sweep", "load_sweeps", "parse_sweep", "specs_from"]
