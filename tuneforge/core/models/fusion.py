"""Image + text fusion classifiers behind the same Backbone/Classifier interface (and bundle).

A batch is a dict. Each modality comes either raw, run through its encoder:
    "images" (B, 3, H, W) uint8 or [0, 1] floats; "input_ids", "attention_mask" (B, T)
or as what a frozen encoder computed once (fit caches it, so epochs cost only the fusion head):
    "image_tokens" (B, P, Di) (the last feature map's cells, or P = 1: the pooled vector);
    "text_tokens" (B, T, Dt) with "text_mask" (B, T)
plus "has_image", "has_text" (B,) {0, 1}: which inputs a row really has. A missing input is
replaced by a learned "missing" embedding, so one model predicts from either input or both;
modality dropout in training (fit_multimodal.FusionSupervised) teaches it to.

Fusions (`fusion`):
  late       LayerNorm'd pooled features, concatenated: the head is a linear probe on both.
  gated      a gated multimodal unit (Arevalo et al., 2017): per-dimension sigmoid gate mixing
             tanh projections of the two pooled features; a missing input gets gate 0.
  attention  text tokens (queries) attend to image cells (keys/values): one pre-norm
             cross-attention + MLP block; its pooled output is concatenated with the late
             features (a residual: attention adds to late fusion, it cannot lose it). A missing
             image is one learned null cell; a missing text is one learned query token.
With one modality (`modalities` "image" or "text") the features are that encoder's, LayerNorm'd:
the single-modality baselines train through exactly the same code."""
from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from .base import Backbone, Classifier
from .registry import ModelSpec, model_spec, register
from .text import build_text_backbone, masked_pool

FUSIONS = ("late", "gated", "attention")


def _mode_to_k(mode: str | int, n: int) -> int:
    if isinstance(mode, int) or str(mode).isdigit():
        return min(int(mode), n)
    return {"none": 0, "backbone": n}[mode]


class FusionBackbone(Backbone):
    def __init__(self, image_model: str = "efficientnet_lite0", text_model: str = "minilm",
                 modalities: str = "image,text", fusion: str = "late", dim: int = 256, heads: int = 4,
                 pretrained: bool = True, image_size: int = 224, pooling: str = "mean", hf_config: dict | None = None):
        super().__init__()
        mods = tuple(m.strip() for m in modalities.split(","))
        if not mods or set(mods) - {"image", "text"} or len(set(mods)) != len(mods):
            raise ConfigError(f"--modalities: {modalities!r} is not allowed; use image,text or image or text")
        if fusion not in FUSIONS:
            raise ConfigError(f"--fusion: {fusion!r} is not allowed; choose one of {', '.join(FUSIONS)}")
        self.modalities, self.fusion = mods, fusion if len(mods) == 2 else "single"
        self.image = self.text = None
        if "image" in mods:
            if model_spec(image_model).modality != "image":
                raise ConfigError(f"--image-model {image_model} is not an image model (`tuneforge models` lists them)")
            self.image = model_spec(image_model).build(image_size, pretrained)
            self.mean, self.std = self.image.mean, self.image.std
        if "text" in mods:
            if model_spec(text_model).modality != "text" or not (text_model == "minilm" or text_model.startswith("hf:")):
                raise ConfigError(f"--text-model {text_model}: fusion takes a pretrained encoder (minilm or hf:PATH)")
            self.text = build_text_backbone(text_model, pretrained, pooling=pooling, hf_config=hf_config)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        di = self.image.feature_dim if self.image is not None else 0
        dt = self.text.feature_dim if self.text is not None else 0
        self.image_dim, self.text_dim = di, dt
        # Learned stand-ins for an input a row does not have (pooled space).
        if di:
            self.norm_i, self.missing_image = nn.LayerNorm(di), nn.Parameter(torch.zeros(di))
        if dt:
            self.norm_t, self.missing_text = nn.LayerNorm(dt), nn.Parameter(torch.zeros(dt))
        if self.fusion == "single":
            self.feature_dim = di or dt
        elif self.fusion == "late":
            self.feature_dim = di + dt
        elif self.fusion == "gated":
            self.proj_i, self.proj_t = nn.Linear(di, dim), nn.Linear(dt, dim)
            self.gate = nn.Linear(2 * dim, dim)
            self.feature_dim = dim
        else:  # attention
            self.q_proj = nn.Sequential(nn.LayerNorm(dt), nn.Linear(dt, dim))
            self.kv_proj = nn.Sequential(nn.LayerNorm(di), nn.Linear(di, dim))
            self.null_cell, self.null_query = nn.Parameter(torch.zeros(1, 1, dim)), nn.Parameter(torch.zeros(1, 1, dim))
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm_a, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            self.feature_dim = di + dt + dim
        self.frozen = {"image": 0, "text": 0}

    # ------------------------------------------------------------------ encoders
    def encoders(self) -> dict[str, nn.Module]:
        return {k: m for k, m in (("image", self.image), ("text", self.text)) if m is not None}

    def stages(self) -> list[nn.Module]:
        return [s for m in self.encoders().values() for s in m.stages()]

    def fusion_modules(self) -> list[nn.Module]:
        enc = set(map(id, self.encoders().values()))
        return [m for m in self.children() if id(m) not in enc]

    @torch.no_grad()
    def image_tokens(self, images: torch.Tensor, pooled_only: bool = False) -> torch.Tensor:
        """Images -> (B, P, Di) cells of the last feature map (P = 1 when pooled_only or when
        the backbone cannot return its maps). No grad: for caching; training calls _image_tokens."""
        return self._image_tokens(images, pooled_only)

    def _image_tokens(self, images: torch.Tensor, pooled_only: bool = False) -> torch.Tensor:
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images
        x = (x - self._mean) / self._std
        if not self.image.can_split():
            return self.image(x)[:, None]
        maps = self.image.forward_stages(x)
        if pooled_only:
            return self.image.pool(maps)[:, None]
        return maps.flatten(2).transpose(1, 2)  # (B, h*w, C)

    @torch.no_grad()
    def text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooled_only: bool = False) -> torch.Tensor:
        return self._text_tokens(input_ids, attention_mask, pooled_only)

    def _text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooled_only: bool = False) -> torch.Tensor:
        if pooled_only:
            return self.text({"input_ids": input_ids, "attention_mask": attention_mask})[:, None]
        return self.text.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # ------------------------------------------------------------------ fusion
    def forward(self, batch: dict) -> torch.Tensor:
        n = len(next(v for v in batch.values() if torch.is_tensor(v)))
        ref = next(self.parameters())
        ones = torch.ones(n, device=ref.device)
        need_tokens = self.fusion == "attention"
        feats, has = {}, {}
        if self.image is not None:
            has["image"] = batch.get("has_image", ones).float()
            if "image_tokens" in batch:
                it = batch["image_tokens"].float()
            else:
                it = self._image_tokens(batch["images"], pooled_only=not need_tokens)
            feats["image"] = it
        if self.text is not None:
            has["text"] = batch.get("has_text", ones).float()
            if "text_tokens" in batch:
                tt, tm = batch["text_tokens"].float(), batch["text_mask"]
            else:
                tm = batch["attention_mask"]
                tt = self._text_tokens(batch["input_ids"], tm, pooled_only=not need_tokens)
                if not need_tokens:
                    tm = tm[:, :1]
            feats["text"] = (tt, tm)
        pooled = {}
        if "image" in feats:
            p = feats["image"].mean(1)
            h = has["image"][:, None]
            pooled["image"] = self.norm_i(h * p + (1 - h) * self.missing_image)
        if "text" in feats:
            tt, tm = feats["text"]
            p = masked_pool(tt, tm, self.text.pooling) if tt.shape[1] > 1 else tt[:, 0]
            h = has["text"][:, None]
            pooled["text"] = self.norm_t(h * p + (1 - h) * self.missing_text)
        if self.fusion == "single":
            return next(iter(pooled.values()))
        pi, pt = pooled["image"], pooled["text"]
        if self.fusion == "late":
            return torch.cat([pi, pt], 1)
        if self.fusion == "gated":
            zi, zt = torch.tanh(self.proj_i(pi)), torch.tanh(self.proj_t(pt))
            g = torch.sigmoid(self.gate(torch.cat([zi, zt], 1)))
            hi, ht = has["image"][:, None], has["text"][:, None]
            g = g * hi * ht + hi * (1 - ht)  # only an image: g = 1; only a text: g = 0
            return g * zi + (1 - g) * zt
        # attention: text tokens query the image cells
        kv = self.kv_proj(feats["image"])
        hi = has["image"][:, None, None]
        # Shapes derived from tensors, not from len(): an ONNX trace keeps the batch axis dynamic.
        null = torch.zeros_like(kv[:, :1]) + self.null_cell
        kv_pad = (hi[:, :, 0] == 0).expand(-1, kv.shape[1])
        kv = torch.cat([kv * hi, null], 1)  # the null cell is always there: a missing image leaves only it
        key_pad = torch.cat([kv_pad, torch.zeros_like(kv_pad[:, :1])], 1)
        tt, tm = feats["text"]
        q = self.q_proj(tt)
        ht = has["text"][:, None, None]
        q = q * ht + (1 - ht) * self.null_query  # a missing text: every position is the null query
        qm = tm.float() * ht[:, :, 0] + (1 - ht[:, :, 0]) * (torch.arange(tm.shape[1], device=tm.device) == 0).float()
        a, _ = self.attn(q, kv, kv, key_padding_mask=key_pad, need_weights=False)
        h = q + a
        h = h + self.mlp(self.norm_a(h))
        return torch.cat([pi, pt, masked_pool(h, qm, "mean")], 1)


class FusionClassifier(Classifier):
    """backbone = FusionBackbone; the dict batch goes straight in (images are normalised inside).
    `freeze` takes one mode for both encoders; `freeze_encoders` one each (none/backbone/K)."""

    def features(self, x: dict) -> torch.Tensor:
        return self.backbone(x)

    def freeze(self, mode: str | int) -> None:
        self.freeze_encoders(mode, mode)

    def freeze_encoders(self, image: str | int = "backbone", text: str | int = "backbone") -> None:
        b: FusionBackbone = self.backbone
        for p in self.parameters():
            p.requires_grad_(True)
        for name, mode in (("image", image), ("text", text)):
            enc = b.encoders().get(name)
            if enc is None:
                continue
            stages = enc.stages()
            k = _mode_to_k(mode, len(stages))
            for s in stages[:k]:
                s.requires_grad_(False)
            if k == len(stages):
                enc.requires_grad_(False)  # also what stages() does not list (e.g. a pooler)
            b.frozen[name] = k
        self.frozen_stages = 0
        self.train(self.training)

    def encoder_frozen(self, name: str) -> bool:
        enc = self.backbone.encoders().get(name)
        return enc is not None and self.backbone.frozen[name] == len(enc.stages())

    def train(self, mode: bool = True) -> "FusionClassifier":
        nn.Module.train(self, mode)
        b = self.backbone
        # Frozen stages keep their pretrained BatchNorm statistics and no dropout (as Classifier).
        for name, enc in b.encoders().items():
            for s in enc.stages()[: b.frozen.get(name, 0)]:
                s.eval()
            if b.frozen.get(name, 0) == len(enc.stages()):
                enc.eval()
        return self


class FusionHead(nn.Module):
    """What trains when both encoders are frozen (their outputs cached): the fusion layers and the
    head, shared with the FusionClassifier. Its state dict (checkpoints) holds only those, not
    the ~100 MB of frozen encoder weights the bundle carries once."""

    def __init__(self, model: FusionClassifier):
        super().__init__()
        object.__setattr__(self, "_model", model)  # not a submodule: kept out of state_dict
        self.fusion = nn.ModuleList(model.backbone.fusion_modules())
        # the learned stand-ins for missing inputs are parameters of the backbone itself
        self.own = nn.ParameterList([p for _, p in model.backbone.named_parameters(recurse=False)])
        self.dropout, self.head = model.dropout, model.head

    def forward(self, batch: dict) -> torch.Tensor:
        return self._model(batch)

    def train(self, mode: bool = True) -> "FusionHead":
        self.training = mode
        self._model.train(mode)
        return self


def build_fusion(image_size: int, pretrained: bool, **args) -> FusionBackbone:
    return FusionBackbone(pretrained=pretrained, image_size=image_size, **args)


FusionBackbone.classifier_cls = FusionClassifier


def _fusion(image_size: int, pretrained: bool, **args) -> Backbone:
    return build_fusion(image_size, pretrained, **args)


# Built by `fit --modalities image,text` (its --image-model and --text-model inside), not by --model.
register("fusion", ModelSpec(_fusion, 224, "its encoders'", "image+text fusion classifier (late/gated/attention) over "
                             "--image-model and --text-model; made by fit --modalities image,text", "multimodal",
                             made_by="fit --modalities image,text builds it from --image-model and --text-model"))
