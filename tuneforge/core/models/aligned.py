"""An aligned image-text pair: an image backbone and a text backbone, each followed by a
projection head into one shared embedding space, plus a learnable temperature (CLIP's recipe,
built from the encoders we have: efficientnet_lite0 and minilm by default, any registered
image model and any local Hugging Face encoder (`hf:PATH`) otherwise).

The encoders are usually frozen: their pooled features are then computed once (and cached on
disk by `tuneforge.align`), and only `ProjectionHeads` (the two heads, the per-dimension
feature standardisation and the temperature) is trained, on those features. The bundle holds
the whole pair, so a run folder is all `retrieve`, `zeroshot` and `embed` need."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..bundle import load_bundle, read_bundle_config, register_kind, save_bundle
from ...errors import BundleError, ConfigError
from ..tokenizer import TOKENIZER_DIR, TextEncoding
from .registry import model_spec
from .text import build_text_backbone, load_tokenizer

TASK = "image-text-alignment"
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps 1/temperature at 100: sharper only overfits


def projection(kind: str, dim_in: int, dim_out: int, dropout: float = 0.0) -> nn.Module:
    """'linear' (one matrix: the right size for a few thousand pairs) or 'mlp' (one hidden GELU
    layer of width dim_out, with dropout on its input)."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim_in, dim_out, bias=False))
    if kind == "mlp":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim_in, dim_out), nn.GELU(), nn.Linear(dim_out, dim_out))
    raise ConfigError(f"--head: {kind!r} is not allowed; choose linear or mlp")


class Standardise(nn.Module):
    """(x - mean) / std per feature dimension, with the statistics of the training features.
    Pooled CNN features (non-negative, a few large dimensions) and mean-pooled sentence
    features live on very different scales; standardising both lets one learning rate suit
    both heads. Buffers, so they travel in the bundle."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        x = x.float().reshape(-1, x.shape[-1])
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class ProjectionHeads(nn.Module):
    """What alignment trains on cached encoder features: standardise -> project -> L2-normalise,
    for each modality, and the logit scale (1 / temperature, learned in log space)."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int, head: str = "linear", dropout: float = 0.0,
                 temperature: float = 0.07):
        super().__init__()
        self.image_norm, self.text_norm = Standardise(image_dim), Standardise(text_dim)
        self.image_proj = projection(head, image_dim, embed_dim, dropout)
        self.text_proj = projection(head, text_dim, embed_dim, dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()

    def embed_image(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_norm(features)), dim=-1)

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_norm(features)), dim=-1)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_image(image_features), self.embed_text(text_features)


class AlignedPair(nn.Module):
    """image encoder + text encoder + ProjectionHeads. Images come in as float [0, 1] NCHW;
    texts as token batches {"input_ids", "attention_mask"} from the text encoder's tokenizer."""

    def __init__(self, image_model: str = "efficientnet_lite0", text_model: str = "minilm", embed_dim: int = 256,
                 head: str = "linear", dropout: float = 0.0, temperature: float = 0.07, image_size: int = 224,
                 pretrained: bool = True, hf_config: dict | None = None):
        super().__init__()
        spec = model_spec(image_model)
        if spec.modality != "image":
            raise ConfigError(f"--image-model: {image_model!r} is a {spec.modality} model; `tuneforge models` lists image models")
        if not (text_model == "minilm" or text_model.startswith("hf:")):
            raise ConfigError(f"--text-model: {text_model!r} is not a pretrained text encoder; use minilm or hf:PATH")
        self.image_encoder = spec.build(image_size, pretrained and bool(spec.pretrained))
        self.text_encoder = build_text_backbone(text_model, pretrained, hf_config=hf_config)
        self.heads = ProjectionHeads(self.image_encoder.feature_dim, self.text_encoder.feature_dim, embed_dim, head,
                                     dropout, temperature)
        self.register_buffer("mean", torch.tensor(self.image_encoder.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.image_encoder.std).view(1, 3, 1, 1), persistent=False)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image-encoder features of [0, 1] images."""
        return self.image_encoder((x - self.mean) / self.std)

    def text_features(self, batch: dict) -> torch.Tensor:
        return self.text_encoder(batch)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads.embed_image(self.image_features(x))

    def encode_text(self, batch: dict) -> torch.Tensor:
        return self.heads.embed_text(self.text_features(batch))

    def encoder_digest(self, which: str) -> str:
        """A short hash of one encoder's weights: cached features are valid only for exactly
        these weights (a fine-tuned encoder gets its own cache entries)."""
        enc = self.image_encoder if which == "image" else self.text_encoder
        h = hashlib.sha256()
        for k, v in sorted(enc.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


class TailAndHeads(nn.Module):
    """What alignment trains when the image encoder's last stages learn too: those stages (run
    on the cached output maps of the frozen ones) and the ProjectionHeads, with the same
    interface as ProjectionHeads, so the Contrastive strategy does not know the difference.
    Its modules are the pair's own (training it trains the pair); its state dict, and so the
    checkpoints, hold only what trains."""

    def __init__(self, pair: AlignedPair, start: int):
        super().__init__()
        self.start = start
        object.__setattr__(self, "_encoder", pair.image_encoder)  # not a submodule: not in the state dict
        self.tail = nn.ModuleList(pair.image_encoder.stages()[start:])
        self.heads = pair.heads
        for p in pair.image_encoder.parameters():
            p.requires_grad_(False)
        for p in self.parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> "TailAndHeads":
        super().train(mode)
        self._encoder.train(False)  # frozen stages keep their statistics ...
        self.tail.train(mode)  # ... the trained ones adapt theirs
        return self

    def image_features(self, maps: torch.Tensor) -> torch.Tensor:
        return self._encoder.pool(self._encoder.forward_stages(maps.float(), self.start))

    def scale(self) -> torch.Tensor:
        return self.heads.scale()

    def embed_image(self, maps: torch.Tensor) -> torch.Tensor:
        return self.heads.embed_image(self.image_features(maps))

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return self.heads.embed_text(features)

    def forward(self, maps: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_image(maps), self.embed_text(text_features)


# --- the bundle: written and read by core/bundle.py, as every bundle is ---

def from_config(config: dict) -> AlignedPair:
    """The (untrained) pair a bundle's config.json describes."""
    m = config["model"]
    return AlignedPair(m["image_model"], m["text_model"], m["embed_dim"], m["head"], m.get("dropout", 0.0),
                       image_size=config["preprocessing"]["image_size"], pretrained=False, hf_config=m["hf_config"])


def model_card(config: dict) -> str:
    """README.md of an aligned pair's bundle."""
    m, metrics = config["model"], (config.get("metrics") or {}).get("test", {})
    card = [f"# Aligned image-text pair ({m['image_model']} + {m['text_model']})", "",
            f"{TASK}, made by tuneforge on {config['created']}: both encoders map into one "
            f"{m['embed_dim']}-d space where a caption and its image have a high cosine.", ""]
    if metrics:
        card += ["## Test retrieval", "```json", json.dumps(metrics, indent=1), "```", ""]
    if config.get("onnx"):
        o = config["onnx"]
        card += ["## ONNX", f"`{o['file']}`: opset {o['opset']}, dynamic batch; inputs images (uint8 NCHW), input_ids, "
                 "attention_mask, has_image, has_text (one of the two per row); output `embeddings` (L2-normalised). "
                 f"Checked at export: max |difference| to PyTorch {o['max_abs_diff']:.2g} on {o['checked_on']} real inputs.", ""]
    if config.get("exported"):
        card += [f"Exported {config['exported']}.", ""]
    card += ["## Use", "```", 'tuneforge retrieve <this folder> --images DIR --query "a dog runs on grass"',
             'tuneforge zeroshot <this folder> --data DIR --prompts "a photo of a {}"',
             "tuneforge embed <this folder> --images DIR --out embeddings.safetensors",
             "tuneforge predict <this folder> image.jpg \"a caption\"   # embeddings", "```", ""]
    return "\n".join(card)


def save_aligned(out: str | Path, model: AlignedPair, meta: dict, tokenizer=None) -> Path:
    """meta: {"model": {image_model, text_model, embed_dim, head, ...}, "preprocessing": {...},
    "metrics": {...}, ...}. The tokenizer is saved beside the weights, so the folder can be
    moved anywhere and still load without the original packages' files."""
    enc = TextEncoding(meta["preprocessing"].get("max_length", 0), tokenizer=tokenizer) if tokenizer is not None else None
    return save_bundle(out, model, {"task": TASK, **meta}, tokenizer=enc)


def load_aligned(path: str | Path) -> tuple[AlignedPair, dict, object]:
    """(model in eval mode, config, tokenizer) of an alignment run folder or its bundle.
    Every file's checksum is verified before any weight is read."""
    config = read_bundle_config(path)
    if config.get("task") != TASK:
        raise BundleError(f"{config['_dir']}: a {config.get('task')!r} bundle, not an aligned pair from `tuneforge align`")
    model, config = load_bundle(path)
    return model, config, load_tokenizer(Path(config["_dir"]) / TOKENIZER_DIR)


register_kind(TASK, from_config, model_card)
