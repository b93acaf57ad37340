"""Pretraining on unlabeled data (`tuneforge pretrain`): self-supervised image methods (SimCLR,
BYOL, SimSiam; image.py) and continued masked-language-model pretraining of a text encoder
(text.py). Both end in `backbone.safetensors`, which `fit --init RUN` loads."""
from ..plugins import Plugin, register_plugin

PLUGIN = register_plugin(Plugin(
    "pretrain", groups=("run", "optim", "model", "image", "table", "text", "ssl", "mlm", "ema"), detect=None,
    fit="tuneforge.tasks.pretrain.image:pretrain", resolve="tuneforge.tasks.pretrain.common:resolve",
    help="`tuneforge pretrain`: unlabeled images (simclr, byol, simsiam) or texts (mlm)"))
