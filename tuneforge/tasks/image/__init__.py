"""Images in class folders (the fallback kind): any data no other kind claims."""
from ..plugins import Plugin, register_plugin


def detect(cfg) -> bool:
    """The fallback, asked last: any data no other kind claims."""
    return True


PLUGIN = register_plugin(Plugin(
    "image", groups=("run", "optim", "model", "image", "semi", "ema", "baseline"), detect="tuneforge.tasks.image:detect",
    fit="tuneforge.tasks.image.fit:fit", resolve="tuneforge.tasks.image.fit:resolve", tasks=("image-classification",),
    infer="tuneforge.tasks.image.infer", help="a folder of class folders (train/, val/, test/ or one tree)"))
