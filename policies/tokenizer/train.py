"""Train the instruction SentencePiece model offline and write it into policies/tokenizer/assets/.

Run `python -m policies.tokenizer.train` after changing instructions.py and commit the new model file.
Nothing trains or downloads at run time: serving reads the model bytes embedded in the policy file.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import sentencepiece as spm

from policies.tokenizer.instructions import corpus
from policies.tokenizer.language import DEFAULT_MODEL, PAD_ID, UNK_ID, InstructionTokenizer

VOCAB_SIZE = 64  # an upper bound: the word model keeps one piece per corpus word (~40) plus pad and unk


def train(lines: list[str], vocab_size: int = VOCAB_SIZE) -> bytes:
    """A word-level SentencePiece model over `lines`, as the bytes of its .model file."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="word",  # one id per word; an unseen word is one unk id, not a run of letters
        normalization_rule_name="identity",  # we lower-case and collapse spaces ourselves; keeps the file small
        character_coverage=1.0,
        hard_vocab_limit=False,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        eos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    lines = corpus()
    model = train(lines, args.vocab_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(model)
    tok = InstructionTokenizer(model)
    print(f"{args.out}: {len(model)} bytes, vocab {tok.vocab_size}, {len(lines)} instructions, sha256 {tok.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
