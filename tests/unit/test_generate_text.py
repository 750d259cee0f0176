"""Chat rendering and stop handling of :mod:`models.generate` on the tiny model."""

from __future__ import annotations

import copy

import pytest

from bench.tiny import tiny_model, tiny_tokenizer
from models.generate import NoChatTemplate, SamplingParams, generate, render_chat
from models.generate.chat import BadMessages
from models.generate.sampling import TextTracker

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_chat_uses_the_tokenizers_template_or_refuses_clearly() -> None:
    plain = tiny_tokenizer()
    with pytest.raises(NoChatTemplate, match="no chat template"):
        render_chat(plain, [{"role": "user", "content": "Hi"}])
    chat = copy.deepcopy(plain)
    chat.chat_template = CHATML
    ids = render_chat(chat, [{"role": "user", "content": "Paris is"}])
    assert chat.decode(ids) == "<|im_start|>user\nParis is<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(BadMessages, match="role"):
        render_chat(chat, [{"role": "tool", "content": "x"}])


def test_stop_strings_end_the_text_and_are_held_back_while_streaming() -> None:
    tok = tiny_tokenizer()
    tracker = TextTracker(tok, ("Paris is",))
    assert not tracker.update(tok("The capital: Pa").input_ids)
    assert tracker.stable() == "The capital: "  # "Pa" may start the stop string
    assert tracker.update(tok("The capital: Paris is France").input_ids)
    assert tracker.text == "The capital: " and tracker.stable() == "The capital: "


def test_generation_stops_at_a_stop_string() -> None:
    tok = tiny_tokenizer()
    model = tiny_model(vocab_size=len(tok))
    free = generate(model, tok, ["Paris is"], SamplingParams(max_tokens=12))[0]
    assert free.finish_reason == "length" and len(free.text) > 3
    stop = free.text[2:4]
    cut = generate(model, tok, ["Paris is"], SamplingParams(max_tokens=12, stop=(stop,)))[0]
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(stop)]
