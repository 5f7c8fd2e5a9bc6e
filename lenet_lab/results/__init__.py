"""A study's results, as every reader needs them: below `sweep` and `report`, which both
import this package and never each other.

- study: a study's data read from the database (`load_study`), trials of dead workers
  shown as failed without writing;
- outcomes: did a trial, an arm, learn?
- stats: intervals, Welch's and paired differences, p-values, power;
- arms: arm keys and labels, each arm's numbers, and the one ranking of arms;
- answer: the paragraph that answers the exercise;
- best: the one "best network", for confirmation, exercise 9 and exercise 10.
"""

from __future__ import annotations

from lenet_lab.results.answer import Answer, Decision, seeds_to_add, study_answer
from lenet_lab.results.arms import ArmName, ArmStats, arm_keys, arm_names, arm_stats, ranked, sig
from lenet_lab.results.best import best_configuration, best_network, confirmation_choice
from lenet_lab.results.outcomes import Outcome
from lenet_lab.results.stats import Interval
from lenet_lab.results.study import StudyData, load_study, study_list

__all__ = ["Answer", "ArmName", "ArmStats", "Decision", "Interval", "Outcome", "StudyData",
           "arm_keys", "arm_names", "arm_stats", "best_configuration", "best_network",
           "confirmation_choice", "load_study", "ranked", "seeds_to_add", "sig", "study_answer",
           "study_list"]
