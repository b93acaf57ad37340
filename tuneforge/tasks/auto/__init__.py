"""`--model auto --time-budget MIN`: a small portfolio of ordinary fits of the other kinds (a
classic baseline, a frozen encoder + head, fine-tunes), trained in order of cost within the
budget, each into RUN/members/NAME; the best on validation is copied to RUN/model, and report.json
/html hold the leaderboard. Test data is never used to choose (tasks/auto/fit.py)."""
from ..plugins import Plugin, register_plugin


def detect(cfg) -> bool:
    return cfg.model == "auto"


# registered last, so asked first (plugins.plugin_for): --model auto on any data it has a portfolio for
PLUGIN = register_plugin(Plugin(
    "auto", groups=("run", "model", "table", "image", "fusion", "auto"), detect="tuneforge.tasks.auto:detect",
    fit="tuneforge.tasks.auto.fit:fit_auto",
    # what each member sets for itself (portfolio.py), or what a run of several fits cannot honour
    unread=("recipe", "precision", "grad_clip", "max_minutes", "pretrained", "weights", "init", "freeze",
            "cache_features", "dropout", "image_size", "resize", "augment", "tta", "head_init",
            "channels_last", "nproc", "sync_bn", "device"),
    help="--model auto --time-budget MIN: a portfolio of models within the budget, chosen on validation"))
