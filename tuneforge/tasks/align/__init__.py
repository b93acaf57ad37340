"""Contrastive image-text alignment (`tuneforge align`) and what an aligned pair is for:
retrieve, zeroshot, embed (workflow.py)."""
from ..registry import Plugin, register_plugin
from . import infer  # noqa: F401  registers the "image-text-alignment" Task

PLUGIN = register_plugin(Plugin(
    "align", groups=("run", "optim", "image", "table", "text", "align"), detect=lambda cfg: False,
    fit="tuneforge.tasks.align.workflow:align", tasks=("image-text-alignment",),
    help="`tuneforge align`: an image+text table of (image, caption) pairs"))
