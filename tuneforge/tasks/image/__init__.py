"""Images in class folders or NumPy arrays (.npz) (the fallback kind): any data no other kind claims."""
from ..plugins import Plugin, register_plugin

ARRAY_SUFFIXES = (".npz",)  # core/data/arrays.py reads them; not imported here (torch)


def detect(cfg) -> bool:
    """The fallback, asked last: any data no other kind claims (a .npz of image arrays among it)."""
    return True


def is_arrays(cfg) -> bool:
    """--data names a .npz file of image arrays (by its suffix)."""
    return str(cfg.data or "").lower().endswith(ARRAY_SUFFIXES)


PLUGIN = register_plugin(Plugin(
    "image", groups=("run", "optim", "model", "image", "semi", "ema", "baseline", "decision"), detect="tuneforge.tasks.image:detect",
    fit="tuneforge.tasks.image.fit:fit", resolve="tuneforge.tasks.image.fit:resolve", tasks=("image-classification",),
    infer="tuneforge.tasks.image.infer", help="a folder of class folders (train/, val/, test/ or one tree), or a .npz of image arrays"))
