"""Instruction text → fixed-length token ids, through the project's own SentencePiece model.

One class, built from the model's bytes: export embeds those bytes in the policy file and serving rebuilds
the tokenizer from them, so a policy is always fed the ids it was trained on. Id 0 is padding; the model
masks padded positions, so an empty instruction means "no language input", not a sentence of zeros.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import sentencepiece as spm

PAD_ID = 0
UNK_ID = 1
DEFAULT_MODEL = Path(__file__).with_name("assets") / "instructions.model"


class InstructionTooLong(ValueError):
    """An instruction encodes to more tokens than the model's instruction length."""


class InstructionTokenizer:
    def __init__(self, model_bytes: bytes):
        self.model_bytes = bytes(model_bytes)
        self.sha256 = hashlib.sha256(self.model_bytes).hexdigest()
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        if self._sp.pad_id() != PAD_ID:
            raise ValueError(f"tokenizer model has pad id {self._sp.pad_id()}, expected {PAD_ID}")
        self._encode = lru_cache(maxsize=256)(self._encode_uncached)

    @classmethod
    def default(cls) -> InstructionTokenizer:
        """The tokenizer shipped with the project (policies/tokenizer/assets/instructions.model)."""
        return cls(DEFAULT_MODEL.read_bytes())

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def _encode_uncached(self, text: str, length: int) -> tuple[int, ...]:
        ids = self._sp.encode(" ".join(text.lower().split()), out_type=int)
        if len(ids) > length:
            raise InstructionTooLong(f"instruction {text!r} is {len(ids)} tokens; the model takes at most {length}")
        return tuple(ids) + (PAD_ID,) * (length - len(ids))

    def encode(self, text: str, length: int) -> np.ndarray:
        """int64 ids of shape (length,), right-padded with PAD_ID; raises InstructionTooLong."""
        return np.asarray(self._encode(text, length), dtype=np.int64)

    def decode(self, ids: np.ndarray) -> str:
        return self._sp.decode([int(i) for i in np.asarray(ids).ravel() if i != PAD_ID])
