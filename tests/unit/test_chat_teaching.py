"""The name term's chat context (``chat.name_context="chat"``): the rows it adds and that it
changes z (issue 25, item 2), on a tiny random model with a chat template."""

from __future__ import annotations

import copy

import pytest
import torch

from bench.tiny import tiny_model, tiny_tokenizer
from editing.hparams import ChatTeaching, EditHparams
from editing.requests import EditRequest
from editing.targets import optimize_z
from editing.targets.encoding import NAME_QUESTION, encode_names

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

REQ = EditRequest(subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="English",
                  target_true="French", question="What is the mother tongue of Danielle Darrieux?")


@pytest.fixture
def chat_tok():
    """The tiny BPE tokenizer with a ChatML template (a copy: the cached one stays plain)."""
    clone = copy.deepcopy(tiny_tokenizer("bpe"))
    clone.chat_template = CHATML
    return clone


def test_the_chat_name_context_mentions_the_subject_in_a_question_of_its_own(chat_tok) -> None:
    row = encode_names(chat_tok, [REQ], "chat")[0]
    text = chat_tok.decode(row.ids)
    assert NAME_QUESTION.format(REQ.subject) in text and REQ.question not in text
    assert chat_tok.decode(row.target).strip() == REQ.subject and row.ids[-len(row.target):] == row.target
    # z's offset goes at the question's mention: its last token ends the subject
    assert chat_tok.decode(row.ids[: row.fact + 1]).endswith("Darrieux")
    assert "assistant" not in chat_tok.decode(row.ids[: row.fact + 1])
    sentence = encode_names(chat_tok, [REQ])[0]
    assert sentence.target == row.target and len(sentence.ids) < len(row.ids)


def test_the_chat_name_context_changes_the_name_terms_z(chat_tok) -> None:
    model = tiny_model("llama", vocab_size=len(chat_tok))
    hp = EditHparams(layers=(1,), z_steps=4, z_lr=0.5, nll_stop=0.0, chat=ChatTeaching(name_kl_factor=50.0))
    sentence = optimize_z(model, chat_tok, [REQ], [""], 1, hp)
    chat = optimize_z(model, chat_tok, [REQ], [""], 1, hp.with_overrides({"chat.name_context": "chat"}))
    assert not torch.allclose(sentence.offset, chat.offset)
    assert "name_context" not in hp.to_stored()
    with pytest.raises(ValueError, match="name_context"):
        hp.with_overrides({"chat.name_context": "answer"})
