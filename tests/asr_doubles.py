"""Tiny randomly initialised ``transformers`` models saved to a folder (nothing downloaded):
a Whisper speech recogniser with its processor, and a BERT text classifier with its tokenizer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

WORDS = ("Ġbon", "jour", "Ġmadame", "Ġje", "Ġvais", "Ġvous", "Ġlaver")


def build_tiny_whisper(folder: Path, *, seed: int = 0) -> Path:
    """A 1-layer Whisper (d_model 16) with a byte-level BPE tokenizer of a few French words,
    Whisper's special and timestamp tokens, languages en/fr and alignment heads."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges: list[str] = []
    for w in WORDS:
        cur = w[0]
        for ch in w[1:]:
            merges.append(f"{cur} {ch}")
            cur += ch
            vocab.setdefault(cur, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n",
                                       encoding="utf-8")
    special = ["<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>", "<|transcribe|>",
               "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
               *[f"<|{i * 0.02:.2f}|>" for i in range(1501)]]
    eot = "<|endoftext|>"
    tok = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=eot,
                           bos_token=eot, eos_token=eot, pad_token=eot)
    tok.add_special_tokens({"additional_special_tokens": special})
    ids = {s: tok.convert_tokens_to_ids(s) for s in [eot, *special]}
    cfg = WhisperConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
                        max_target_positions=24, decoder_start_token_id=ids["<|startoftranscript|>"],
                        eos_token_id=ids[eot], pad_token_id=ids[eot], bos_token_id=ids[eot],
                        begin_suppress_tokens=None, suppress_tokens=None)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    g = model.generation_config
    g.decoder_start_token_id = ids["<|startoftranscript|>"]
    g.eos_token_id = g.pad_token_id = ids[eot]
    g.no_timestamps_token_id = ids["<|notimestamps|>"]
    g.lang_to_id = {"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]}
    g.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    g.is_multilingual = True
    g.alignment_heads = [[0, 0], [0, 1]]
    g.max_length = 24
    g.begin_suppress_tokens = g.suppress_tokens = None
    g._from_model_config = False
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(folder)
    return folder


def build_tiny_text_classifier(folder: Path, *, labels: Sequence[str], words: Sequence[str],
                               seed: int = 0) -> Path:
    """A 1-layer BERT sequence classifier with ``id2label`` = ``labels`` and a word-piece
    vocabulary of ``words``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(w.lower() for w in words)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizer(str(folder / "vocab.txt"))
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, initializer_range=1.0,  # texts differ clearly
                     id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def ramp_wav(path: Path, seconds: float, *, sr: int = 16_000) -> Path:
    """A WAV whose sample value encodes its own time (t / 1000 s), for fake recognisers."""
    from ser.signal import audio

    t = np.arange(round(seconds * sr)) / sr
    audio.write_wav(path, (t / 1000.0).astype(np.float32), sr)
    return path
