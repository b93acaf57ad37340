"""`tuneforge search`: hyperparameter search with Optuna over the settings of any kind of fit.
Each trial is an ordinary fit (tasks/launch.py) into STUDY/trials/NNNN, pruned through an engine
callback; the study lives in an Optuna storage (STUDY/study.db, or a database URL shared by
several workers). study.py runs it, space.py reads the search space, report.py writes the study's
report. It knows no kind's code: only the plugin registry, through the fit path."""
from ..plugins import Plugin, register_plugin

PLUGIN = register_plugin(Plugin(
    "search", groups=(), detect=None, fit="tuneforge.tasks.search.study:search",
    help="`tuneforge search`: trials of any kind of fit, chosen by Optuna"))
