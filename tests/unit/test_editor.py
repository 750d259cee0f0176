"""The Editor end to end on tiny random models: strategies, state, caches."""

from __future__ import annotations

import pytest
import torch

from editing import Editor, EditorCaches, EditRequest, EditState, WeightDelta
from editing.forward.logprob import target_logprob
from editing.forward.tokens import continuation_ids
from editing.hparams import ChatTeaching
from editing.methods import get_method
from editing.targets.zcache import ZCache
from models.specs import mlp_out_weight
from tests.conftest import FACTS, TINY_HPARAMS

# Random tiny models move little per unit of hidden state: strong z, weak regulariser.
HP = TINY_HPARAMS.replace(
    z_steps=20, clamp_norm_factor=10.0, kl_factor=0.0, weight_decay=0.0, covariance_weight=1.0
)


def make_editor(tiny, corpus, tmp_path, **hp_changes) -> Editor:
    model, tok = tiny
    return Editor(model, tok, hparams=HP.replace(**hp_changes), model_name="tiny", cache_dir=tmp_path, corpus=corpus)


@pytest.mark.parametrize("method", ["fe", "memit", "per_layer", "one_layer"])  # one per strategy
def test_every_strategy_raises_the_new_target(tiny, corpus, tmp_path, method: str) -> None:
    editor = make_editor(tiny, corpus, tmp_path, method=method)
    model, tok = tiny
    weights = {layer: mlp_out_weight(model, layer).clone() for layer in range(4)}
    facts = FACTS[:1]  # random tiny models have little room; several facts: the real-model test
    before = [target_logprob(model, tok, f.text, f.target_new) for f in facts]
    result = editor.edit(facts)
    for layer, weight in weights.items():
        assert torch.equal(mlp_out_weight(model, layer), weight), "edit() leaves the model unchanged"
    assert result.delta.layers == list(HP.with_method(method).edited_layers)
    result.delta.apply(model)
    after = [target_logprob(model, tok, f.text, f.target_new) for f in facts]
    assert all(a > b + 0.2 for a, b in zip(after, before, strict=True)), (before, after)
    d = result.diagnostics
    assert len(d["z_loss"]) == len(facts) and d["timings"]["total_s"] > 0
    assert len(d["residual_ratio"]) == len(result.delta.layers) + 1


def test_forward_replay_shrinks_the_residual(tiny, corpus, tmp_path) -> None:
    result = make_editor(tiny, corpus, tmp_path, layers=(1, 2, 3)).edit(FACTS)
    ratios = result.diagnostics["residual_ratio"]
    assert ratios[0] == pytest.approx(1.0)
    assert ratios[-1] < 0.5 * ratios[0], ratios


def test_sequential_state_carries_old_keys(tiny, corpus, tmp_path) -> None:
    editor = make_editor(tiny, corpus, tmp_path)
    model, _ = tiny
    first = editor.edit(FACTS[:2])
    assert first.state.n_facts == 2
    first.delta.apply(model)
    second = editor.edit(FACTS[2:], state=first.state)
    assert second.state.n_facts == 3
    assert second.delta.info["prior_facts"] == 2
    rebuilt = EditState.from_deltas([first.delta, second.delta])
    for layer in HP.layers:
        torch.testing.assert_close(rebuilt.old_kkT(layer), second.state.old_kkT(layer))
    # Without the old-keys term the second batch's update moves the first batch's outputs more.
    forgetful = editor.edit(FACTS[2:], state=EditState())
    for layer in HP.layers:
        old_keys = first.delta.keys[layer].double()
        kept = (second.delta.updates[layer].dense().double() @ old_keys).norm()
        moved = (forgetful.delta.updates[layer].dense().double() @ old_keys).norm()
        assert kept < moved, (layer, kept, moved)


def test_delta_carries_keys_and_round_trips(tiny, corpus, tmp_path) -> None:
    result = make_editor(tiny, corpus, tmp_path).edit(FACTS[:2])
    loaded = WeightDelta.from_bytes(result.delta.to_bytes())
    assert loaded.sha256 == result.delta.sha256
    assert loaded.keys[1].shape[1] == 2
    assert loaded.hparams["strategy"] == "forward_replay"


def test_statistics_and_templates_are_cached_on_disk(tiny, corpus, tmp_path) -> None:
    make_editor(tiny, corpus, tmp_path).edit(FACTS[:1])
    stats = list((tmp_path / "stats").rglob("*.safetensors"))
    assert {p.name.split("_L")[1] for p in stats} == {"1.safetensors", "2.safetensors"}
    assert list((tmp_path / "templates").glob("*.json"))
    again = make_editor(tiny, corpus, tmp_path)
    assert again.prefixes()[0] == "" and len(again.prefixes()) == 1 + len(HP.template_prefixes)


def test_z_cache_is_reused(tiny, corpus, tmp_path) -> None:
    model, tok = tiny
    cache = ZCache(tmp_path / "z")
    editor = Editor(model, tok, hparams=HP, cache_dir=tmp_path, corpus=corpus, z_cache=cache)
    first = editor.edit(FACTS[:2])
    assert len(list((tmp_path / "z").glob("*.safetensors"))) == 2
    second = editor.edit(FACTS[:2])
    assert second.diagnostics["z_steps"] == [0, 0], "cached z needs no steps"
    for layer in first.delta.layers:
        torch.testing.assert_close(first.delta.updates[layer].dense(), second.delta.updates[layer].dense())


def test_z_cache_misses_after_an_edit_below_the_z_layer(tiny, corpus, tmp_path) -> None:
    """z at layer 1 starts from h at layer 1, which layer 0's MLP changes: the key must too."""
    model, tok = tiny
    cache = ZCache(tmp_path / "z")
    editor = Editor(model, tok, hparams=HP, cache_dir=tmp_path, corpus=corpus, z_cache=cache)
    z_layer = HP.edited_layers[0]
    assert z_layer >= 1
    first = editor.z_at(FACTS[:1], z_layer)
    assert editor.z_at(FACTS[:1], z_layer).steps == [0], "same weights: the cached z is used"
    weight = mlp_out_weight(model, z_layer - 1)
    with torch.no_grad():
        weight.add_(0.05 * torch.randn_like(weight))  # an edit below z's layer
    again = editor.z_at(FACTS[:1], z_layer)
    assert again.steps[0] > 0, "an edit below z's layer must not reuse the cached z"
    assert not torch.equal(again.h, first.h.to(again.h.device))


def _greedy_request(model, tok) -> EditRequest:
    """A request whose target is what the model already says (found by greedy decoding)."""
    for subject in ("Danielle Darrieux", "Toko Yasuda", "Watts Humphrey", "Paris", "Rome"):
        for prompt in ("The mother tongue of {} is", "{} plays the", "{} is in"):
            text = prompt.format(subject)
            ids = tok(text, return_tensors="pt").input_ids
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
            for k in (1, 2, 3):
                new = out[0, ids.shape[1] : ids.shape[1] + k].tolist()
                head = tok.decode(ids[0], skip_special_tokens=True)
                decoded = tok.decode(ids[0].tolist() + new, skip_special_tokens=True)[len(head) :]
                if decoded.startswith(" ") and decoded.strip() and continuation_ids(tok, text, decoded[1:]) == new:
                    return EditRequest(subject, prompt, decoded[1:])
    raise AssertionError("no greedy continuation usable as a target")


def test_target_already_predicted_is_reported(tiny, corpus, tmp_path) -> None:
    model, tok = tiny
    request = _greedy_request(model, tok)
    result = make_editor(tiny, corpus, tmp_path).edit([FACTS[0], request])
    assert result.diagnostics["already_predicted"] == [1]


def test_a_corpus_directory_reads_its_text_files_in_name_order(tmp_path) -> None:
    from editing.solve.stats import Corpus

    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.txt").write_text("= Heading =\nfirst file\n")
    corpus = Corpus(str(tmp_path))
    assert list(corpus.texts()) == ["first file", "second file"]
    single = Corpus(str(tmp_path / "a.txt"))
    assert corpus.id != single.id and corpus.id == Corpus(str(tmp_path)).id
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .txt files"):
        list(Corpus(str(tmp_path / "empty")).texts())


def test_new_z_settings_leave_old_cache_keys_and_hashes_alone() -> None:
    hp = TINY_HPARAMS
    assert "name_kl_factor" not in hp.to_stored() and "name_context" not in hp.to_stored()
    assert hp.replace(chat=ChatTeaching(name_kl_factor=1.0)).to_stored()["name_kl_factor"] == 1.0
    with pytest.raises(ValueError, match="name_context must be one of"):
        hp.with_overrides({"chat.name_context": "never"})


def test_the_z_cache_key_follows_the_name_term(tiny, tmp_path) -> None:
    model, _ = tiny
    cache = ZCache(tmp_path)
    keys = {cache.context_key(model, "fp", 1, hp, [""]) for hp in (
        TINY_HPARAMS,
        TINY_HPARAMS.replace(chat=ChatTeaching(name_kl_factor=1.0)),
        TINY_HPARAMS.replace(chat=ChatTeaching(name_kl_factor=1.0, name_context="chat")))}
    assert len(keys) == 3


def test_context_keys_hold_the_prompts_other_tokens_in_place(tiny, corpus, tmp_path) -> None:
    from editing.targets.encoding import encode_requests
    from editing.targets.keys import layer_keys

    model, tok = tiny
    facts = FACTS[:1]
    plain = make_editor(tiny, corpus, tmp_path).edit(facts)
    held = make_editor(tiny, corpus, tmp_path, context_key_weight=100.0).edit(facts)
    assert "context_key_weight" not in plain.delta.hparams
    assert held.delta.hparams["context_key_weight"] == 100.0
    rows = encode_requests(tok, facts, [""], with_target=False)
    layer = HP.layers[0]  # solved first: its keys are the unedited model's
    others = layer_keys(model, rows, tok.pad_token_id, layer, range(len(rows)))[1].double()
    assert others.shape[0] == len(rows[0].ids) - 1
    moved = (plain.delta.updates[layer].dense().double() @ others.T).norm()
    kept = (held.delta.updates[layer].dense().double() @ others.T).norm()
    assert kept < 0.5 * moved, (kept, moved)
    before = target_logprob(model, tok, facts[0].text, facts[0].target_new)
    held.delta.apply(model)
    assert target_logprob(model, tok, facts[0].text, facts[0].target_new) > before + 0.2
    with pytest.raises(ValueError, match="context_key_weight must be >= 0"):
        HP.replace(context_key_weight=-1.0)


def test_later_batches_hold_earlier_prompts_other_tokens_too(tiny, corpus, tmp_path) -> None:
    editor = make_editor(tiny, corpus, tmp_path, context_key_weight=100.0)
    model, _ = tiny
    first = editor.edit(FACTS[:2])
    assert first.state.n_facts == 2  # held columns count no facts
    held = first.delta.held_keys
    assert set(held) == set(HP.layers) and all(h.shape[1] > 2 for h in held.values())
    loaded = WeightDelta.from_bytes(first.delta.to_bytes())
    for layer in HP.layers:
        torch.testing.assert_close(loaded.held_keys[layer], held[layer])
    assert not make_editor(tiny, corpus, tmp_path).edit(FACTS[:1]).delta.held_keys
    first.delta.apply(model)
    second = editor.edit(FACTS[2:], state=first.state)
    combined = WeightDelta.combine([first.delta, second.delta])
    rebuilt = EditState.from_deltas([first.delta, second.delta])
    for layer in HP.layers:
        assert combined.held_keys[layer].shape[1] == held[layer].shape[1] + second.delta.held_keys[layer].shape[1]
        torch.testing.assert_close(rebuilt.old_kkT(layer), second.state.old_kkT(layer))
    # Without the first batch's held columns, the second update moves those tokens more.
    keys_only = EditState(keys={layer: [k] for layer, k in first.delta.keys.items()})
    forgetful = editor.edit(FACTS[2:], state=keys_only)
    for layer in HP.layers:
        columns = held[layer].double()
        kept = (second.delta.updates[layer].dense().double() @ columns).norm()
        moved = (forgetful.delta.updates[layer].dense().double() @ columns).norm()
        assert kept < moved, (layer, kept, moved)


def test_settings_per_call_match_an_editor_built_with_them_and_share_one_statistics_cache(
        tiny, corpus, tmp_path) -> None:
    """``edit(hparams=...)`` computes exactly what an editor built with those hparams does,
    leaves the editor's own hparams alone, and every method reads the same statistics."""
    model, tok = tiny
    shared = Editor(model, tok, EditorCaches(tmp_path / "shared", corpus), hparams=HP, model_name="tiny")
    for method in ("fe", "memit"):
        hp = HP.with_method(method).replace(covariance_weight=3.0)
        alone = Editor(model, tok, hparams=hp, model_name="tiny", cache_dir=tmp_path / method, corpus=corpus)
        expected = alone.edit(FACTS[:2]).delta
        got = shared.edit(FACTS[:2], hparams=hp).delta
        assert got.sha256 == expected.sha256
        assert shared.hparams is HP and shared.method.name == get_method(HP.method_name).name
    assert len(shared.caches._stats) == 1
