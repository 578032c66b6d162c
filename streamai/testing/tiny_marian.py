"""A tiny randomly initialised Marian translation model in CTranslate2 format, built at test time.

It proves the ``translate`` stage's ``ctranslate2`` engine (a user's OPUS-MT folder)
without any downloaded weights: a SentencePiece model trained on a few sentences, a
``MarianMTModel`` with d_model 64 and 2+2 layers, converted with CTranslate2's
``TransformersConverter``. Its output is gibberish in the target vocabulary, by design.
"""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = [
    "good morning, where is the train station",
    "I would like a cup of coffee, please",
    "the weather is very nice today",
    "can you help me find my hotel",
    "bom dia, onde fica a estação de trem",
    "eu gostaria de uma xícara de café, por favor",
    "o tempo está muito bom hoje",
    "você pode me ajudar a encontrar meu hotel",
]


def build_tiny_marian(folder: Path, vocab_size: int = 70) -> Path:
    """Write a converted tiny Marian model into ``folder/ct2`` and return that path."""
    import sentencepiece as spm
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    hf = folder / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(hf / "spm"),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_file=str(hf / "spm.model"))
    pieces = [
        processor.id_to_piece(i) for i in range(processor.get_piece_size()) if processor.id_to_piece(i) != "<unk>"
    ]
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)  # the converter requires <pad> last
    (hf / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    for name in ("source.spm", "target.spm"):
        (hf / name).write_bytes((hf / "spm.model").read_bytes())
    tokenizer = MarianTokenizer(
        source_spm=str(hf / "source.spm"), target_spm=str(hf / "target.spm"), vocab=str(hf / "vocab.json")
    )
    tokenizer.save_pretrained(str(hf))
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=128,
        pad_token_id=vocab["<pad>"],
        eos_token_id=0,
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=0,
    )
    MarianMTModel(config).save_pretrained(str(hf))
    out = folder / "ct2"
    TransformersConverter(str(hf)).convert(str(out), quantization="int8", force=True)
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes((hf / name).read_bytes())
    return out
