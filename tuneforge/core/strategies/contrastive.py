"""Contrastive image-text alignment (CLIP's symmetric InfoNCE) as a strategy of the one Engine.

A batch is (image features (B, V, D_img), text features (B, D_txt), image ids (B,)): one row
per caption, beside the pooled features of its image, as the frozen encoders computed them
once (or the output maps of the frozen image stages, (B, V, C, h, w), when the last stages
train too). View 1, when present, is the mirrored image; a random view per row is flip
augmentation, and evaluation uses view 0.

The loss: cosine similarities of the B image and B text embeddings, times the learned scale
(1 / temperature), read as B-way classification in both directions (text -> image and image ->
text), averaged. With 5 captions per image, two rows of a batch can hold the same image: those
pairs are positives too (the target is spread evenly over them) rather than false negatives
the loss would push apart."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor,
             ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalised embeddings; `ids` marks rows showing the same image."""
    logits = scale * text_emb @ image_emb.T  # (texts, images)
    if ids is None:
        target = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    same = (ids[:, None] == ids[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class Contrastive:
    def __init__(self, flip: bool = False):
        self.flip = flip

    def _embed(self, heads: nn.Module, image_feats: torch.Tensor, text_feats: torch.Tensor,
               view: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        image_feats = image_feats[torch.arange(len(image_feats)), view] if view is not None else image_feats[:, 0]
        return heads(image_feats, text_feats)

    def train_step(self, heads: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        image_feats, text_feats, ids = batch
        view = None
        if self.flip and image_feats.shape[1] > 1:
            view = torch.randint(0, image_feats.shape[1], (len(ids),), generator=generator)
        img, txt = self._embed(heads, image_feats, text_feats, view)
        return {"loss": info_nce(img, txt, heads.scale(), ids)}

    def eval_step(self, heads: nn.Module, batch) -> dict[str, torch.Tensor]:
        image_feats, text_feats, ids = batch
        img, txt = self._embed(heads, image_feats, text_feats, None)
        return {"loss": info_nce(img, txt, heads.scale(), ids)}
