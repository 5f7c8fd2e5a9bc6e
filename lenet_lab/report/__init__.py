"""`lenet-lab report`: each study's answer and its evidence as offline HTML. Reads only.

The numbers and the answer come from `lenet_lab.results`; draw (plotly figures) ->
pages (HTML from templates); write reads the database and writes the pages;
activations is exercise 10's view.
"""

from __future__ import annotations

from lenet_lab.report.write import build_report

__all__ = ["build_report"]
