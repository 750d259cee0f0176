"""Tiny random models and tokenizers built from configs: no downloads, seconds to build; for
the unit tests and for the benchmarks that run a service on a tiny model (bench.service).

Two tokenizer styles cover what fact-token location and target encoding must survive:
``bpe`` is GPT-2-like byte-level BPE (no BOS, the leading space merges into the next token);
``bos`` is sentencepiece-like (Metaspace, adds a BOS token).
"""

from __future__ import annotations

from functools import cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from models.load import prepare_tokenizer

CORPUS = [
    "The mother tongue of Danielle Darrieux is French.",
    "The native language of Montesquieu is French. English is spoken in London.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Toko Yasuda plays the guitar. Apple A5 was created by Apple and Google.",
    "What university did Watts Humphrey attend? Illinois Institute of Technology.",
    "Therefore, Because I You The a an is of in the and to was by for with on at",
    "Michel Rocard is a native speaker of French. Rome is in Italy, Tokyo is in Japan.",
]


@cache
def tiny_tokenizer(style: str = "bpe") -> PreTrainedTokenizerFast:
    """A small trained tokenizer; ``style`` is ``bpe`` (GPT-2-like) or ``bos`` (Llama-like)."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    if style == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet)
        tok.train_from_iterator(CORPUS, trainer)
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")
    elif style == "bos":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials)
        tok.train_from_iterator(CORPUS, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
        )
    else:
        raise ValueError(style)
    return prepare_tokenizer(wrapped)


def tiny_model(arch: str = "llama", vocab_size: int = 400, layers: int = 4, seed: int = 0) -> PreTrainedModel:
    """A random ``llama`` or ``gpt2`` model of a few layers, float32, eval mode, no grads."""
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            tie_word_embeddings=True, initializer_range=0.2,
        )
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_embd=32, n_layer=layers, n_head=4, n_positions=256,
            bos_token_id=1, eos_token_id=2, initializer_range=0.2,
        )
    else:
        raise ValueError(arch)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval().requires_grad_(False)
