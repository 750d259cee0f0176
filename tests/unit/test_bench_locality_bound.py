"""Held prompts in the solve: their sources, the positions held, and that holding works."""

from __future__ import annotations

import random

import torch

from bench.locality_bound import (
    HeldPrompt,
    encode_held,
    filled,
    held_keys,
    held_state,
    position_mask,
    subject_variants,
)
from editing import EditRequest, EditState
from editing.evaluate.data import Record
from editing.forward.batch import pad_id
from tests.conftest import FACTS
from tests.unit.test_editor import HP, make_editor


def test_subject_variants_swap_one_word_of_the_subject_in_its_own_prompt() -> None:
    records = [Record(0, EditRequest("Danielle Darrieux", "The mother tongue of {} is", "English")),
               Record(1, EditRequest("Montesquieu", "{} was born in", "Rome"))]
    held = subject_variants(records, ["Alpha", "Beta"], per=2, rng=random.Random(0))
    assert len(held) == 4
    first, second = (h.text[h.name[0]: h.name[1]] for h in held[:2])
    assert first.endswith(" Darrieux") and not first.startswith("Danielle")
    assert second.startswith("Danielle ") and not second.endswith("Darrieux")
    assert all(h.text.startswith("The mother tongue of ") for h in held[:2])
    third, fourth = (h.text[h.name[0]: h.name[1]] for h in held[2:])
    assert third.startswith("Montesquieu ") and fourth.endswith(" Montesquieu")


def test_the_held_name_is_marked_token_by_token(tiny) -> None:
    _, tok = tiny
    held = filled("The mother tongue of {} is", "Toko Yasuda")
    ids, flags = encode_held(tok, held)
    offsets = tok(held.text, return_offsets_mapping=True)["offset_mapping"]
    marked = "".join(held.text[a:b] for (a, b), flag in zip(offsets, flags, strict=True) if flag)
    assert marked.replace(" ", "").replace("▁", "") == "TokoYasuda"
    assert len(ids) == len(flags)
    _, capitalised = encode_held(tok, HeldPrompt("The mother tongue of Toko Yasuda is"))
    assert capitalised == flags, "without a span: the capitalised words after the first"


def test_position_masks() -> None:
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    names = torch.tensor([[False, True, True, False, False], [False, False, False, False, False]])
    assert position_mask("last_name", attention, names).tolist() == [
        [False, False, True, False, False], [False] * 5]
    assert position_mask("names", attention, names).tolist() == names.tolist()
    assert position_mask("all", attention, names).tolist() == attention.bool().tolist()


def test_holding_prompts_keeps_their_outputs_where_they_were(tiny, corpus, tmp_path) -> None:
    """With w 0 the delta is the plain edit's; with a large w the update moves the held
    prompts' keys far less than without (the control: w 0 moves them)."""
    model, tok = tiny
    editor = make_editor(tiny, corpus, tmp_path)
    facts = FACTS[:2]
    held = [filled(f.prompt, "Watts Humphrey") for f in facts]
    plain = editor.edit(facts, state=EditState()).delta
    unheld = editor.edit(facts, state=held_state(model, tok, held, "names", 0.0)).delta
    strong = editor.edit(facts, state=held_state(model, tok, held, "names", 1e4)).delta
    layer = HP.layers[0]
    torch.testing.assert_close(unheld.updates[layer].dense(), plain.updates[layer].dense())
    keys = held_keys(model, [encode_held(tok, h) for h in held], pad_id(tok), layer, "names").float()
    moved_plain = (keys @ plain.updates[layer].dense().T).norm()
    moved_held = (keys @ strong.updates[layer].dense().T).norm()
    assert moved_plain > 1e-4
    assert moved_held < 0.1 * moved_plain
