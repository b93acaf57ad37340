"""Images in class folders (the fallback kind): any data no other kind claims."""
from ..registry import Plugin, register_plugin
from . import infer  # noqa: F401  registers the "image-classification" Task

PLUGIN = register_plugin(Plugin(
    "image", groups=("run", "optim", "model", "image", "semi", "ema"), detect=lambda cfg: True,
    fit="tuneforge.tasks.image.fit:fit", resolve="tuneforge.tasks.image.fit:resolve", tasks=("image-classification",),
    help="a folder of class folders (train/, val/, test/ or one tree)"))
