"""The user-view metrics (issue 25): whole-word answers, name integrity, fluency, chat
efficacy, and batched greedy generation, on known answers and tiny random models."""

from __future__ import annotations

import math

import pytest
import torch

from bench.tiny import tiny_model, tiny_tokenizer
from editing.evaluate import evaluate
from editing.evaluate.chat import USER_KEYS, UserView, answer_metrics
from editing.evaluate.generation import generate_greedy
from editing.evaluate.metrics import contains_word, name_break, ngram_entropy, states_new_fact
from editing.evaluate.scoring import RowScore, ScoreRow
from editing.forward.chat import answer_sep, chat_prompt
from editing.hparams import ChatTeaching
from editing.requests import EditRequest

REQ = EditRequest(
    subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="English",
    target_true="French", neighborhood_prompts=("The native language of Montesquieu is",),
    question="What is the mother tongue of Danielle Darrieux?",
)


def test_contains_word_matches_whole_words_case_insensitively() -> None:
    assert contains_word("She speaks english at home.", "English")
    assert contains_word("It is in new york city", "New York")
    assert not contains_word("A Parisian cafe", "Paris")
    assert not contains_word("Frenchman", "French")
    assert contains_word("He codes in C++ daily", "C++")  # regex characters are literal
    assert not contains_word("anything", "  ")


def test_generated_efficacy_needs_the_new_target_and_not_the_old_one() -> None:
    assert states_new_fact("Her mother tongue is English.", "English", "French")
    assert not states_new_fact("English or French, she says", "English", "French")
    assert not states_new_fact("Her mother tongue is French.", "English", "French")
    assert states_new_fact("It is English.", "English", None)
    scores = answer_metrics(REQ, "Her mother tongue is English.", " French, of course.")
    assert scores["generated_chat_efficacy"] == 1.0 and scores["generated_chat_true"] == 0.0
    assert scores["generated_cloze_efficacy"] == 0.0 and scores["generated_cloze_true"] == 1.0


def test_ngram_entropy_is_romes_weighted_bigram_and_trigram_entropy() -> None:
    # bigrams (a b) x2, (b a) x1; trigrams (a b a), (b a b) once each
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("the the the the the the") == 0.0  # one repeated n-gram
    assert ngram_entropy("the cat sat on the mat today") > ngram_entropy("the cat the cat the cat")
    assert ngram_entropy("") == 0.0


def test_name_break_selects_predicted_tokens_and_detects_a_lost_one() -> None:
    name = torch.tensor([5, 6, 7])
    # the unedited model predicts only one token of the name: not a record to judge
    assert name_break(name, torch.tensor([5, 0, 0]), torch.tensor([0, 0, 0])) is None
    # it predicts 6 and 7; the edited model still does: intact
    assert name_break(name, torch.tensor([0, 6, 7]), torch.tensor([1, 6, 7])) == 0.0
    # the edited model loses 7: broken
    assert name_break(name, torch.tensor([0, 6, 7]), torch.tensor([0, 6, 9])) == 1.0
    # a token the unedited model missed cannot break
    assert name_break(name, torch.tensor([9, 6, 7]), torch.tensor([8, 6, 7])) == 0.0


def _score(target_ids: list[int], probs: list[float]) -> RowScore:
    return RowScore(torch.tensor(target_ids), torch.tensor(probs).log(), torch.tensor(target_ids))


def test_chat_efficacy_compares_the_targets_as_the_assistants_first_tokens() -> None:
    tok = tiny_tokenizer("bpe")
    view = UserView(tok)
    forms = view.forms(REQ)
    assert forms.chat != forms.custom and REQ.question in forms.chat
    edited_rows, base_rows = view.rows(REQ)
    chat_rows = {r for r in edited_rows if r.prompt in (forms.chat, forms.custom) and r.target}
    assert {r.target for r in chat_rows} == {"English", "French"}
    assert all(r.sep == answer_sep(forms.chat) for r in chat_rows)

    def scores(new_p: float, new_p_custom: float) -> dict[ScoreRow, RowScore]:
        out = {r: _score([1], [0.5]) for r in edited_rows + base_rows}
        for r in chat_rows:
            if r.target == "English":
                out[r] = _score([1, 2], [new_p] * 2 if r.prompt == forms.chat else [new_p_custom] * 2)
        for r in edited_rows + base_rows:  # next-token rows
            out[r].next_logprobs = torch.full((4,), 0.25).log()
        return out

    won = scores(0.6, 0.4)
    metrics = view.metrics(REQ, won, won)
    assert metrics["chat_efficacy"] == 1.0  # 0.6 per token beats French's 0.5
    assert metrics["chat_efficacy_custom_system"] == 0.0  # 0.4 does not
    assert metrics["chat_kl"] == pytest.approx(0.0)


def test_name_row_is_the_subject_where_the_assistant_repeats_the_sentence() -> None:
    tok = tiny_tokenizer("bpe")
    name = UserView(tok).forms(REQ).name
    assert name.target == "Danielle Darrieux" and name.sep == " "
    assert name.prompt.endswith("The mother tongue of") and REQ.question in name.prompt
    # the subject at the start of the sentence: nothing joins it
    first = EditRequest(subject="Paris", prompt="{} is the capital of", target_new="Italy")
    assert UserView(tok).forms(first).name.sep == answer_sep(chat_prompt(tok, first.text))


@pytest.mark.parametrize(("arch", "style"), [("llama", "bos"), ("gpt2", "bpe")])
def test_batched_greedy_generation_equals_one_prompt_at_a_time(arch: str, style: str) -> None:
    tok = tiny_tokenizer(style)
    model = tiny_model(arch, vocab_size=len(tok))
    prompts = ["Paris is", "The mother tongue of Danielle Darrieux is", "What university did"]
    batched = generate_greedy(model, tok, prompts, max_new_tokens=6, batch_size=8)
    alone = [generate_greedy(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone
    assert all(text for text in batched)


def test_evaluate_reports_the_user_view_and_an_unchanged_model_breaks_nothing() -> None:
    tok = tiny_tokenizer("bpe")
    model = tiny_model("llama", vocab_size=len(tok))
    results = evaluate(model, tok, [REQ], None, dataset="counterfact", per_record=True)
    for key in USER_KEYS:
        assert key in results
    assert results["chat_kl"] == pytest.approx(0.0) and results["chat_top1"] == 100.0
    assert results["names_broken"] in (None, 0.0)
    assert isinstance(results["records"][0]["chat_answer"], str)
    cloze_only = evaluate(model, tok, [REQ], None, dataset="counterfact", user_view=False)
    assert "chat_efficacy" not in cloze_only
    assert cloze_only["efficacy_success"] == results["efficacy_success"]


def test_name_rows_predict_the_second_mention_of_the_subject() -> None:
    from editing.targets.encoding import encode_names

    tok = tiny_tokenizer("bpe")
    row = encode_names(tok, [REQ])[0]
    assert tok.decode(row.target).strip() == REQ.subject
    assert row.ids[-len(row.target):] == row.target
    assert tok.decode(row.ids[: row.fact + 1]).strip() == REQ.subject  # the first mention


def test_the_name_term_changes_z_and_only_when_asked() -> None:
    from editing.hparams import EditHparams
    from editing.targets.z import optimize_z

    tok = tiny_tokenizer("bpe")
    model = tiny_model("llama", vocab_size=len(tok))
    hp = EditHparams(layers=(1,), z_steps=4, z_lr=0.5, nll_stop=0.0)
    plain = optimize_z(model, tok, [REQ], [""], 1, hp)
    held = optimize_z(model, tok, [REQ], [""], 1, hp.replace(chat=ChatTeaching(name_kl_factor=50.0)))
    assert not torch.allclose(plain.offset, held.offset)
    assert "name_kl_factor" not in hp.to_stored()
