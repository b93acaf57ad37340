"""Masked-language-model pretraining (BERT, Devlin et al. 2019) as a strategy of the one engine.

A batch is `({"input_ids", "attention_mask"}, _)` from `SequenceBatchLoader` (dynamic padding);
`train_step` masks it with the engine's per-epoch generator, so the masks of epoch e depend only
on (seed, e) and `--resume` replays them exactly. We mask ourselves rather than through
`transformers.DataCollatorForLanguageModeling`: the collator draws from the global RNG and
takes no torch.Generator.

  15% of the real (non-special, non-padding) tokens are chosen; of those 80% become [MASK],
  10% a uniformly random token, 10% stay as they are; the loss is cross-entropy on the chosen
  positions only (labels -100 elsewhere)."""
from __future__ import annotations

import torch
from torch import nn

IGNORE = -100


def mask_tokens(ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: list[int], mask_id: int,
                vocab_size: int, g: torch.Generator | None, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels): BERT's 80/10/10 corruption of `prob` of the real tokens."""
    real = attention_mask.bool() & ~torch.isin(ids, torch.tensor(special_ids, dtype=ids.dtype, device=ids.device))
    # drawn on the CPU (the engine's generator: the same masks on every device), used on ids' device
    chosen = (torch.rand(ids.shape, generator=g) < prob).to(ids.device) & real
    # Every text with a real token gets at least one target: short texts (SST-2 has many 2-3 word
    # phrases) would otherwise often contribute no loss at all.
    none = real.any(1) & ~chosen.any(1)
    if none.any():
        score = torch.rand(ids.shape, generator=g).to(ids.device).masked_fill(~real, -1.0)
        pick = score.argmax(1)
        rows = none.nonzero().squeeze(1)
        chosen[rows, pick[rows]] = True
    labels = ids.masked_fill(~chosen, IGNORE)
    r = torch.rand(ids.shape, generator=g).to(ids.device)
    random_tokens = torch.randint(0, vocab_size, ids.shape, generator=g, dtype=ids.dtype).to(ids.device)
    out = torch.where(chosen & (r < 0.8), torch.full_like(ids, mask_id), ids)
    out = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_tokens, out)
    return out, labels


class MaskedLM(nn.Module):
    """A Hugging Face `...ForMaskedLM` model: the encoder is `base` (the same module tree as
    `HFEncoder.encoder`), the LM head sits on top. `forward` returns vocabulary logits only at
    the chosen positions: the head (a 384 x 30,522 decoder for minilm) costs as much as the
    whole encoder when applied to every token, and only ~15% of them have a target."""

    def __init__(self, hf_mlm: nn.Module):
        super().__init__()
        self.mlm = hf_mlm
        # BERT-likes call the head `cls`, RoBERTa-likes `lm_head`; otherwise the full forward.
        self.head_name = next((n for n in ("cls", "lm_head") if isinstance(getattr(hf_mlm, n, None), nn.Module)), None)

    @property
    def base(self) -> nn.Module:
        return self.mlm.base_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """(K, vocab) logits of the K positions where `where` is True."""
        if self.head_name is None:
            return self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits[where]
        h = self.base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return getattr(self.mlm, self.head_name)(h[where])


class MLM:
    """Masked-token cross-entropy; `eval_step` takes batches that were masked once, in advance
    (the held-out slice: the same masks before and after pretraining)."""
    forwards_model = True  # train_step only calls model(...): DistributedDataParallel can wrap it

    def __init__(self, special_ids: list[int], mask_id: int, vocab_size: int, prob: float = 0.15):
        self.special_ids, self.mask_id, self.vocab_size, self.prob = special_ids, mask_id, vocab_size, prob

    def mask(self, batch: dict, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(batch["input_ids"], batch["attention_mask"], self.special_ids, self.mask_id,
                           self.vocab_size, g, self.prob)

    def train_step(self, model: MaskedLM, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, _ = batch
        ids, labels = self.mask(x, generator)
        where = labels != IGNORE
        logits = model(ids, x["attention_mask"], where)
        return {"loss": nn.functional.cross_entropy(logits.float(), labels[where])}

    def eval_step(self, model: MaskedLM, batch) -> dict[str, torch.Tensor]:
        """`batch` = ({"input_ids" (already masked), "attention_mask", "labels"}, _): the summed
        loss and the number of masked tokens, so a slice's loss is a per-token mean."""
        x, _ = batch
        where = x["labels"] != IGNORE
        logits = model(x["input_ids"], x["attention_mask"], where).float()
        loss = nn.functional.cross_entropy(logits, x["labels"][where], reduction="sum")
        return {"loss_sum": loss.reshape(1), "tokens": where.sum().reshape(1)}
