"""Make a tiny Llama chat model offline, in seconds: nothing is downloaded.

    python3 make_model.py OUT_DIR

A byte-level BPE tokenizer is trained with `tokenizers` on the text below, wrapped as a
transformers fast tokenizer with a chat template, and a LlamaForCausalLM with random weights
(hidden 64, 2 heads: head size 32, one the CPU attention kernels of vLLM accept) is saved
beside it as safetensors.  Its answers are noise; it exists to exercise the engine.

It needs torch, transformers and tokenizers: run it in a container of the vLLM image (its
README says how), so the host needs none of them.
"""
from __future__ import annotations

import json
import os
import sys
import time

CORPUS = """\
Gantry runs functions in containers on your own machines. A function is a directory with a
manifest; the platform builds it into an image, places instances on nodes, scales them with
demand and pauses them when they are idle. An agent calls tools and models; a model answers
with tokens, one after another, streamed back as server-sent events. The quick brown fox
jumps over the lazy dog. Pack my box with five dozen liquor jugs. How vexingly quick daft
zebras jump. The five boxing wizards jump quickly. Sphinx of black quartz, judge my vow.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Questions and answers: what is the time? It is
noon. Where is the station? Turn left, then right. Who wrote this? A test, on a CPU.
"""
SPECIALS = ["<pad>", "<s>", "</s>"]
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant: {% endif %}")


def make(out: str, vocab_size: int = 2048, seed: int = 0) -> dict:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    started = time.monotonic()
    os.makedirs(out, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tok.token_to_id("<s>"),
                         eos_token_id=tok.token_to_id("</s>"), pad_token_id=tok.token_to_id("<pad>"),
                         tie_word_embeddings=False, torch_dtype="float32")
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    summary = {"out": out, "vocab": tok.get_vocab_size(),
               "parameters": sum(p.numel() for p in model.parameters()),
               "head_size": config.hidden_size // config.num_attention_heads,
               "seconds": round(time.monotonic() - started, 2)}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 make_model.py OUT_DIR")
    make(sys.argv[1])
