"""`lenet-lab report`: each study's answer and its evidence as offline HTML.

compute (pure numbers) -> draw (plotly figures) -> pages (HTML); build reads the
database and writes the pages; activations is exercise 10's view.
"""

from __future__ import annotations

from lenet_lab.report.build import StudyData, build_report, load_study

__all__ = ["StudyData", "build_report", "load_study"]
