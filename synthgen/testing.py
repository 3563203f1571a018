"""A tiny real llama model and tokenizer, built from configs (as trl does) and
saved to disk so tests and benchmarks load them through ``from_pretrained``.

Not part of the product: test and benchmark infrastructure, kept in the package
so benchmarks need no path tricks to reach it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Pick a random number between 1 and 10. Reply with only the number.",
    "Give me an English first name. Reply with only the name.",
    "Anna Bob Carla David Emma Frank Grace Henry Iris Jack Kate Liam Mia Noah",
    "apple banana cherry mango pear plum lemon orange kiwi grape",
    "Paris London Berlin Madrid Rome Lisbon Vienna Prague Oslo Dublin",
    "doctor teacher engineer lawyer nurse pilot chef baker farmer writer",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "The capital of France is Paris. Write a short biography of a person born in 1950.",
    " ".join(str(i) for i in range(0, 101)),
]


def build_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(path: Path, chat_template: bool = True, seed: int = 0) -> Path:
    """Save a tiny llama model + tokenizer under ``path`` and return it."""
    tokenizer = build_tokenizer(chat_template)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # Larger logits than the default init, so distributions are far from uniform
    # and numerical comparisons are meaningful.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 0.15)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def perturbed_lora(base_model, seed: int = 0, std: float = 0.05, rank: int = 4, alpha: int = 8):
    """A fresh LoRA adapter (``rank``, ``alpha``) on ``base_model`` whose B matrices are
    drawn from N(0, ``std``) instead of zero, so the adapter changes the outputs and
    every LoRA weight gets a gradient; ``seed`` fixes both initialisations."""
    from synthgen.training.config import LoraOptions
    from synthgen.training.loop import lora_model

    torch.manual_seed(seed)
    model = lora_model(base_model, LoraOptions(rank=rank, alpha=alpha))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
    return model
