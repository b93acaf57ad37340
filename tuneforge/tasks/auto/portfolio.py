"""The portfolios of `--model auto`: per kind of data, the members in order of cost, each an
ordinary fit (its FitConfig settings and the plugin that must fit it) with a cost model.

The cost model is seconds on this project's 2-core CPU at load ~1, from BENCHMARKS.md (SST-2,
CIFAR-10): `start_s` (loading the model), `pass_s` per row of every split (decoding, a frozen
encoder's features, val/test predictions) and `step_s` per training row and epoch. The budget
code (fit.py) scales it by what the machine measured on the members already run.
`scale` says how a member is fitted to its share of the budget: "fixed" (as it is), "rows" (fewer
training rows, `--limit-per-class`) or "epochs" (more epochs when there is time, up to `max_epochs`).
The first member of each portfolio is its `baseline`: always started (waited for past the budget),
trained on the same split as the others, and the run's report.json `baseline`; as the choice is the
best on validation among all trained members, the chosen model is never below it on validation.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Member:
    name: str
    plugin: str  # the kind of fit (tasks/plugins.py) these settings must select
    settings: dict = field(default_factory=dict)
    start_s: float = 1.0
    pass_s: float = 0.0
    step_s: float = 0.0
    share: float = 1.0  # at most this fraction of the budget left when it starts
    scale: str = "fixed"
    min_rows: int = 0  # "rows": fewer training rows than this are not worth a start
    max_epochs: int = 1  # "epochs": the most it trains
    baseline: bool = False  # the classic baseline the others are compared with (first; never skipped)

    def seconds(self, train_rows: int, eval_rows: int, epochs: int) -> float:
        """Estimated wall seconds at load ~1."""
        return self.start_s + self.pass_s * (train_rows + eval_rows) + self.step_s * train_rows * epochs

    @property
    def epochs(self) -> int:
        return int(self.settings.get("epochs", 1))


PORTFOLIOS: dict[str, tuple[Member, ...]] = {
    "text": (
        # SST-2: 67k texts featurised and fitted in ~4 s
        Member("tfidf", "tfidf", {"model": "tfidf"}, start_s=1.0, pass_s=1e-4, baseline=True),
        # encoding at 125 texts/s (64 tokens), then 20 head epochs on cached features
        Member("minilm-frozen", "text", {"model": "minilm", "freeze": "backbone", "max_length": 64, "epochs": 20,
                                         "lr": 3e-3, "batch_size": 256, "patience": 5},
               start_s=3.0, pass_s=8e-3, step_s=1e-5, share=0.3, scale="rows", min_rows=200),
        # full fine-tune: 55 texts/s training, 111/s predicting val and test; one epoch on the rows that fit
        Member("minilm-finetune", "text", {"model": "minilm", "freeze": "none", "max_length": 64, "epochs": 1,
                                           "lr": 5e-5, "batch_size": 32, "weight_decay": 0.01, "warmup_epochs": 0.1,
                                           "patience": 0},
               start_s=3.0, pass_s=9e-3, step_s=1.8e-2, share=1.0, scale="rows", min_rows=500),
    ),
    "image": (
        # the linear probe: frozen ImageNet EfficientNet-Lite0 + head on cached features, the head started from the
        # logistic-regression probe (the image fit's own baseline) and trained on: a head from random init trained
        # 10 epochs lost to that probe (CIFAR-10, 1,507 rows: 51.1% vs 58.4% val), so the portfolio's baseline
        # member would have been below the baseline its own report shows
        Member("lite0-probe", "image", {"model": "efficientnet_lite0", "freeze": "backbone", "epochs": 10,
                                        "head_init": "probe"},
               start_s=1.0, pass_s=4e-3, step_s=1e-5, share=0.2, scale="rows", min_rows=1000, baseline=True),
        # `--recipe fast` (2 epochs: 1.3 min an epoch on 47.5k CIFAR-10 images), more epochs when there is time
        Member("fast-cnn", "image", {"recipe": "fast"}, start_s=0.5, pass_s=6e-4, step_s=1.6e-3, share=0.7,
               scale="epochs", max_epochs=12),
        # `--recipe balanced` for one epoch at 64 px (7 min an epoch on 47.5k images), on the rows that fit
        Member("lite0-finetune", "image", {"recipe": "balanced", "epochs": 1}, start_s=1.0, pass_s=3e-3, step_s=9e-3,
               share=1.0, scale="rows", min_rows=2000),
    ),
    # an image+text table (--image-column, --text-column): the tables are written with absolute image paths
    "image+text": (
        # TF-IDF on the text column alone (its bundle reads the text column of such a table)
        Member("tfidf", "tfidf", {"model": "tfidf", "image_column": None}, start_s=1.0, pass_s=1e-4, baseline=True),
        # frozen lite0 + frozen minilm (loading both: ~20 s), features computed once, then a late-fusion head for
        # up to 30 epochs on them. At 128 px, not the fusion fit's 224: lite0 encodes 16.6 images/s at 224 px here
        # (BENCHMARKS.md, align), ~3x that at 128, + minilm on short titles: ~35 rows/s in all
        Member("fusion-late", "image+text", {"modalities": "image,text", "fusion": "late", "image_size": 128,
                                             "epochs": 30, "patience": 5, "lr": 1e-3},
               start_s=20.0, pass_s=3e-2, step_s=2e-4, share=1.0),
    ),
}


def scores(metrics: dict | None) -> dict | None:
    """What a leaderboard row keeps of a split's metrics (a member's or the ensemble's)."""
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "n") if k in metrics} if metrics else None
