"""Texts -> token ids, the same at training and at inference: a pretrained Hugging Face
tokenizer, or a vocabulary built from the training texts. Saved into a bundle as JSON/text
files only (never a pickle)."""
from __future__ import annotations

import json
from pathlib import Path

from .data.text import Vocab
from .models.text import load_tokenizer

TOKENIZER_DIR = "tokenizer"
VOCAB_FILE = "vocab.json"


class TextEncoding:
    """Texts -> token ids, for a pretrained HF tokenizer or a vocabulary built from train."""

    def __init__(self, max_length: int, tokenizer=None, vocab: Vocab | None = None):
        self.max_length, self.tokenizer, self.vocab = max_length, tokenizer, vocab
        self.pad_id = vocab.pad_id if vocab else (tokenizer.pad_token_id or 0)

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if self.vocab is not None:
            return self.vocab.encode(texts, self.max_length)
        out = []
        for i in range(0, len(texts), 4096):
            out += self.tokenizer(texts[i:i + 4096], truncation=True, max_length=self.max_length)["input_ids"]
        return out

    def save(self, folder: Path) -> str:
        if self.vocab is not None:
            (folder / VOCAB_FILE).write_text(json.dumps(self.vocab.to_json(), ensure_ascii=False))
            return VOCAB_FILE
        self.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
        for f in (folder / TOKENIZER_DIR).glob("*"):
            if f.suffix not in (".json", ".txt", ".model"):
                f.unlink()  # JSON and text files only in a bundle
        return TOKENIZER_DIR

    @classmethod
    def load(cls, folder: Path, pre: dict) -> "TextEncoding":
        if pre["tokenizer"] == VOCAB_FILE:
            return cls(pre["max_length"], vocab=Vocab.from_json(json.loads((folder / VOCAB_FILE).read_text())))
        return cls(pre["max_length"], tokenizer=load_tokenizer(folder / TOKENIZER_DIR))
