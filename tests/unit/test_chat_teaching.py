"""Teaching in chat form (``chat.question``, and ``chat.answer``: the answer at once) and the
name term's chat contexts (``chat.name_context="chat"`` and ``"question"``): the rows they add, the z
cache keys, and that they change z only when asked (issue 25, items 2 and 3), on a tiny random
model with a chat template."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from bench.tiny import tiny_model, tiny_tokenizer
from editing import Editor
from editing.forward.chat import chat_prompt
from editing.hparams import ChatTeaching, EditHparams
from editing.requests import EditRequest
from editing.targets import optimize_z
from editing.targets.encoding import NAME_QUESTION, encode_names, encode_requests
from editing.targets.templates import ChatTurn, question_prefix
from editing.targets.zcache import ZCache

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


def test_the_question_prefix_is_each_requests_own_chat_turn(chat_tok) -> None:
    no_question = dataclasses.replace(REQ, question=None)
    rows = encode_requests(chat_tok, [REQ, no_question], ["", ChatTurn.QUESTION])
    asked, cloze = rows[1], rows[3]
    text = chat_tok.decode(asked.ids)
    head = chat_prompt(chat_tok, REQ.question)
    assert head.endswith("assistant\n") and question_prefix(chat_tok, REQ.question) == head
    assert REQ.question in text and text.rstrip().endswith(REQ.text)
    # the fact token is the subject in the assistant's sentence, not the question's mention
    assert chat_tok.decode(asked.ids[asked.fact + 1:]).strip() == "is"
    assert chat_tok.decode(asked.target).strip() == "English"
    # without a question the user's message is the cloze sentence
    assert chat_tok.decode(cloze.ids).count(REQ.text) == 2
    assert rows[0].ids == rows[2].ids  # the bare prompt is shared


@pytest.mark.parametrize(("setting", "marker"), [("question", ChatTurn.QUESTION), ("answer", ChatTurn.ANSWER)])
def test_a_chat_turn_changes_z_only_when_asked_and_keys_z_by_the_question(chat_tok, tmp_path, setting: str,
                                                                          marker: str) -> None:
    model = tiny_model("llama", vocab_size=len(chat_tok))
    hp = EditHparams(layers=(1,), z_steps=4, z_lr=0.5, nll_stop=0.0, template_prefixes=())
    plain = Editor(model, chat_tok, hparams=hp, cache_dir=tmp_path)
    asking = Editor(model, chat_tok, hparams=hp.replace(chat=ChatTeaching(**{setting: True})), cache_dir=tmp_path)
    assert plain.prefixes() == [""] and asking.prefixes() == ["", marker]
    z_plain = optimize_z(model, chat_tok, [REQ], plain.prefixes(), 1, hp)
    z_chat = optimize_z(model, chat_tok, [REQ], asking.prefixes(), 1, asking.hparams)
    assert not torch.allclose(z_plain.offset, z_chat.offset)
    stored = f"chat_{setting}"  # its name in the stored form: left out at its default
    assert stored not in hp.to_stored() and asking.hparams.to_stored()[stored] is True
    # the question is part of the z cache's key: another question, another z
    asking.z_cache = ZCache(tmp_path / "z")
    first = asking.z_at([REQ], 1)
    other = dataclasses.replace(REQ, question="Which language did Danielle Darrieux grow up with?")
    again, moved = asking.z_at([REQ], 1), asking.z_at([other], 1)
    assert again.group_size == 0 and torch.equal(first.offset, again.offset)  # a hit
    assert moved.group_size == 1 and not torch.equal(first.offset, moved.offset)


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


def test_the_answer_prefix_asks_the_fact_and_answers_it_at_once(chat_tok) -> None:
    no_question = dataclasses.replace(REQ, question=None)
    unnamed = dataclasses.replace(REQ, question="Which language did she grow up with?")
    rows = encode_requests(chat_tok, [REQ, no_question, unnamed], ["", ChatTurn.ANSWER])
    asked = rows[1]
    head = chat_prompt(chat_tok, REQ.question)
    assert asked.ids == chat_tok(head).input_ids  # the turn up to the answer, no sentence after it
    assert chat_tok.decode(asked.target).strip() == "English"
    # the fact token ends the subject in the user's message
    assert chat_tok.decode(asked.ids[: asked.fact + 1]).endswith("Darrieux")
    assert chat_tok.decode(asked.ids[asked.fact + 1:]).startswith("?")
    # without a question naming the subject, the user's message is the cloze sentence
    for row in (rows[3], rows[5]):
        assert row.ids == chat_tok(chat_prompt(chat_tok, REQ.text)).input_ids
        assert chat_tok.decode(row.ids[row.fact + 1:]).startswith(" is")
    assert rows[0].ids == rows[2].ids == rows[4].ids  # the bare prompt is shared
    both = Editor(tiny_model("llama", vocab_size=len(chat_tok)), chat_tok,
                  hparams=EditHparams(layers=(1,), template_prefixes=(), chat=ChatTeaching(question=True, answer=True)))
    assert both.prefixes() == ["", ChatTurn.QUESTION, ChatTurn.ANSWER]
    essence = encode_requests(chat_tok, [REQ], ["", ChatTurn.ANSWER], prompt="{} is a", with_target=False)
    assert essence[0].ids == essence[1].ids  # another prompt has no chat turn: the bare one


def test_the_question_name_context_is_the_requests_own_question(chat_tok, tmp_path) -> None:
    row = encode_names(chat_tok, [REQ], "question")[0]
    text = chat_tok.decode(row.ids)
    assert REQ.question in text and NAME_QUESTION.format(REQ.subject) not in text
    assert chat_tok.decode(row.ids[: row.fact + 1]).endswith("Darrieux")
    assert chat_tok.decode(row.target).strip() == REQ.subject and text.endswith("The mother tongue of Danielle Darrieux")
    # a request without a question (or one not naming the subject) asks its sentence, as the evaluation does
    for req in (dataclasses.replace(REQ, question=None), dataclasses.replace(REQ, question="Her language?")):
        asked = chat_tok.decode(encode_names(chat_tok, [req], "question")[0].ids)
        assert asked.count(REQ.text) == 1 and "Her language" not in asked
    # its z follows the question
    model = tiny_model("llama", vocab_size=len(chat_tok))
    hp = EditHparams(layers=(1,), z_steps=4, z_lr=0.5, nll_stop=0.0, template_prefixes=(),
                     chat=ChatTeaching(name_kl_factor=50.0, name_context="question"))
    editor = Editor(model, chat_tok, hparams=hp, cache_dir=tmp_path)
    editor.z_cache = ZCache(tmp_path / "z")
    first = editor.z_at([REQ], 1)
    moved = editor.z_at([dataclasses.replace(REQ, question="Where did Danielle Darrieux grow up?")], 1)
    assert moved.group_size == 1 and not torch.equal(first.offset, moved.offset)
