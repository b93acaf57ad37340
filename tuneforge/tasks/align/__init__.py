"""Contrastive image-text alignment (`tuneforge align`) and what an aligned pair is for:
retrieve, zeroshot, embed (workflow.py)."""
from ..plugins import Plugin, register_plugin

PLUGIN = register_plugin(Plugin(
    "align", groups=("run", "optim", "image", "table", "text", "align"), detect=None,
    fit="tuneforge.tasks.align.workflow:align", tasks=("image-text-alignment",), infer="tuneforge.tasks.align.infer",
    help="`tuneforge align`: an image+text table of (image, caption) pairs"))
