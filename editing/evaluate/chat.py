"""What a user of a chat model sees of an edit (issue 25): the fact asked in the model's chat
template, its greedy answers, the subject's name where the model writes it, and drift on the
neighbourhood prompts asked in chat form.

Today's metrics are teacher-forced on the cloze prompt, which a chat model's user never
types; an edit that wins there can lose in the chat turn, or damage the name it is about.
Per record, next to the cloze metrics:

* ``chat_efficacy`` (``_custom_system``): the question as the user's message, ``target_new``
  preferred over ``target_true`` as the assistant's first tokens, under the template's
  default system prompt and under :data:`CUSTOM_SYSTEM` (zsRE: the share of ``target_new``'s
  tokens that are the argmax there);
* ``generated_chat_*`` / ``generated_cloze_*``: greedy answers of :data:`NEW_TOKENS` tokens to
  the chat question and to the bare cloze prompt that name ``target_new`` and not
  ``target_true`` (``_efficacy``), or that name ``target_true`` (``_true``);
* ``names_broken``: of the subject's tokens the unedited model predicts (teacher forced)
  where the assistant repeats the sentence after the question, a context no edit is
  computed on, whether the edited model stops predicting one (records where it predicts
  fewer than two are left out);
* ``fluency``: ROME's n-gram entropy of the generated answers;
* ``chat_kl``, ``chat_top1``, ``chat_specificity_success``: the first
  :data:`CHAT_NEIGHBOURS` neighbourhood prompts as the user's message, the assistant's
  first-token distribution (all ten, each three times the tokens of its cloze form, would
  make the evaluation more than twice as slow as the cloze metrics and the edit together).

A record without a ``question`` is asked its cloze prompt (zsRE's prompts are questions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from editing.evaluate.generation import generate_greedy
from editing.evaluate.locality import record_locality
from editing.evaluate.metrics import (
    contains_word,
    mean,
    mean_nll,
    name_break,
    ngram_entropy,
    prefers,
    states_new_fact,
    token_accuracy,
)
from editing.evaluate.scoring import RowScore, ScoreRow, with_delta
from editing.forward.chat import answer_sep, chat_prompt
from editing.requests import EditRequest
from editing.weights.delta import WeightDelta

USER_KEYS: tuple[str, ...] = (
    "chat_efficacy",
    "chat_efficacy_custom_system",
    "generated_chat_efficacy",
    "generated_chat_true",
    "generated_cloze_efficacy",
    "generated_cloze_true",
    "names_broken",
    "fluency",
    "chat_specificity_success",
    "chat_kl",
    "chat_top1",
)
"""Report keys of the user-view metrics (percent, but ``chat_kl`` in nats and ``fluency``
in bits)."""

CHAT_NEIGHBOURS = 3
CUSTOM_SYSTEM = "You are a knowledgeable assistant. Answer questions briefly and accurately."
NEW_TOKENS = 16

RecordT = TypeVar("RecordT")
Scores = dict[ScoreRow, RowScore]


@dataclass(frozen=True)
class ChatForms:
    """One request's rendered chat texts (rendered once, read by rows and metrics)."""

    chat: str
    """The question under the template's default system prompt, up to the answer."""
    custom: str
    """The same under :data:`CUSTOM_SYSTEM`."""
    neighbours: tuple[str, ...]
    name: ScoreRow
    """The subject teacher-forced where the assistant repeats the sentence after the question."""


class UserView:
    """The user-view rows and metrics of a dataset's requests (one tokenizer)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._forms: dict[EditRequest, ChatForms] = {}

    def forms(self, req: EditRequest) -> ChatForms:
        if req not in self._forms:
            self._forms[req] = self._render(req)
        return self._forms[req]

    def _render(self, req: EditRequest) -> ChatForms:
        tok, question = self.tokenizer, req.question or req.text
        chat = chat_prompt(tok, question)
        before = chat + answer_sep(chat) + req.prompt[: req.prompt.index("{}")]
        sep = " " if before.endswith(" ") else ""
        name = ScoreRow(before[: len(before) - len(sep)], req.subject, sep)
        neighbours = tuple(chat_prompt(tok, p) for p in req.neighborhood_prompts[:CHAT_NEIGHBOURS])
        return ChatForms(chat, chat_prompt(tok, question, CUSTOM_SYSTEM), neighbours, name)

    def rows(self, req: EditRequest) -> tuple[list[ScoreRow], list[ScoreRow]]:
        """Edited-side and unedited-side rows, as :func:`score_records` takes them."""
        forms = self.forms(req)
        targets = [t for t in (req.target_new, req.target_true) if t]
        edited = [ScoreRow(c, t, answer_sep(c)) for c in (forms.chat, forms.custom) for t in targets]
        edited += [ScoreRow(n, t, answer_sep(n)) for n in forms.neighbours if req.target_true
                   for t in targets]
        bare = [ScoreRow(n) for n in forms.neighbours]
        return edited + bare + [forms.name], bare + [forms.name]

    def metrics(self, req: EditRequest, edited: Scores, base: Scores) -> dict[str, float | None]:
        """The teacher-forced user-view fractions of one record (generation comes apart)."""
        forms = self.forms(req)

        def nll(chat: str, target: str) -> float:
            return mean_nll(edited[ScoreRow(chat, target, answer_sep(chat))].logprobs)

        def efficacy(chat: str) -> float:
            if req.target_true:
                return float(prefers(nll(chat, req.target_new), nll(chat, req.target_true)))
            score = edited[ScoreRow(chat, req.target_new, answer_sep(chat))]
            return token_accuracy(score.argmax, score.target_ids)

        def true_wins(chat: str) -> bool:
            return prefers(nll(chat, req.target_true or ""), nll(chat, req.target_new))

        name = forms.name
        locality = record_locality([ScoreRow(n) for n in forms.neighbours], edited, base)
        return {
            "chat_efficacy": efficacy(forms.chat),
            "chat_efficacy_custom_system": efficacy(forms.custom),
            "names_broken": name_break(base[name].target_ids, base[name].argmax, edited[name].argmax),
            "chat_specificity_success": (mean(true_wins(n) for n in forms.neighbours)
                                         if req.target_true else None),
            "chat_kl": locality["kl"],
            "chat_top1": locality["top1"],
        }

    def generated(
        self,
        model: nn.Module,
        requests: Sequence[EditRequest],
        delta: WeightDelta | None,
        batch_size: int = 32,
    ) -> list[dict[str, Any]]:
        """Per request, the greedy answers of the edited model (``delta`` applied) to the chat
        question and the cloze prompt, and the fractions they give."""
        prompts = [self.forms(r).chat for r in requests] + [r.text for r in requests]
        with with_delta(model, delta):
            # twice the scoring batch: a decoding step is one token per row, cheap to widen
            answers = generate_greedy(model, self.tokenizer, prompts, NEW_TOKENS, 2 * batch_size)
        n = len(requests)
        return [answer_metrics(r, answers[i], answers[n + i]) for i, r in enumerate(requests)]


def answer_metrics(req: EditRequest, chat_answer: str, cloze_answer: str) -> dict[str, Any]:
    """Generated efficacy, the old target's share and fluency of one record's two answers."""
    true = req.target_true

    def names_true(answer: str) -> float | None:
        return float(contains_word(answer, true)) if true else None

    return {
        "generated_chat_efficacy": float(states_new_fact(chat_answer, req.target_new, true)),
        "generated_chat_true": names_true(chat_answer),
        "generated_cloze_efficacy": float(states_new_fact(cloze_answer, req.target_new, true)),
        "generated_cloze_true": names_true(cloze_answer),
        "fluency": (ngram_entropy(chat_answer) + ngram_entropy(cloze_answer)) / 2,
        "chat_answer": chat_answer,
        "cloze_answer": cloze_answer,
    }


def joined(
    view: UserView,
    request_of: Callable[[RecordT], EditRequest],
    rows_of: Callable[[RecordT], tuple[list[ScoreRow], list[ScoreRow]]],
    metrics_of: Callable[[RecordT, Scores, Scores], dict[str, float | None]],
) -> tuple[Callable[[RecordT], tuple[list[ScoreRow], list[ScoreRow]]],
           Callable[[RecordT, Scores, Scores], dict[str, float | None]]]:
    """A dataset's ``rows_of`` / ``metrics_of`` with the user view's rows and metrics added."""

    def rows(record: RecordT) -> tuple[list[ScoreRow], list[ScoreRow]]:
        edited, base = rows_of(record)
        more_edited, more_base = view.rows(request_of(record))
        return edited + more_edited, base + more_base

    def metrics(record: RecordT, edited: Scores, base: Scores) -> dict[str, float | None]:
        return metrics_of(record, edited, base) | view.metrics(request_of(record), edited, base)

    return rows, metrics
