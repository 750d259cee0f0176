"""The stored form of the hyper-parameters does not move: a delta's content hash and the z
cache key are computed over it, so a changed stored form would give every edit a new digest
and miss every cached z. The values here were computed before the restructuring of issue 31
(flat research switches, the papers' names as aliases) and must hold after it."""

from __future__ import annotations

import hashlib
import json

import pytest

from bench.tiny import tiny_model
from editing.hparams import ChatTeaching, EditHparams, NameContext, NullSpace
from editing.presets import PRESETS, generic_preset
from editing.targets.zcache import ZCache

PRESET = PRESETS["smollm2-135m"]

PRESET_STORED = {
    "clamp_norm_factor": 0.75, "context_key_weight": 1.0, "kl_factor": 0.0625, "l2": 0.0,
    "layers": [4, 5, 6, 7, 8], "mom2_update_weight": 2000.0, "nll_stop": 0.05,
    "replay_on_templates": False, "stats_samples": 1000, "stats_seq_len": 128,
    "strategy": "forward_replay", "targets_from": "base",
    "template_prefixes": ["The", "Therefore", "Because", "I", "You"], "template_tokens": 10,
    "use_old_keys": True, "v_lr": 0.1, "v_steps": 35, "weight_decay": 0.5,
}


def _digest(stored: dict) -> str:
    return hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()[:16]


def test_the_preset_is_stored_as_before() -> None:
    assert PRESET.to_stored() == PRESET_STORED
    assert _digest(PRESET.to_stored()) == "605f2c87223e2f7f"


CASES = {
    "smollm2-135m": (lambda: PRESET, "605f2c87223e2f7f"),
    "llama3-8b": (lambda: PRESETS["llama3-8b"], "11b0000744fa9a56"),
    "gpt2-xl": (lambda: PRESETS["gpt2-xl"], "14ba7533879dc740"),
    "gpt-j-6b": (lambda: PRESETS["gpt-j-6b"], "296f094076855132"),
    "generic-30": (lambda: generic_preset(30), "ec7ac765b4d5c48c"),
    "fe": (lambda: PRESET.with_method("fe"), "1d10b3b934ccef64"),
    "memit": (lambda: PRESET.with_method("memit"), "8fca3a1f9d1ac679"),
    "alphaedit": (lambda: PRESET.with_method("alphaedit"), "91db93153994735b"),
    "one_layer": (lambda: PRESET.with_method("one_layer"), "2cb4aa5b8a71811c"),
    "name_chat_4": (lambda: PRESET.with_overrides({"chat": {"name_kl_factor": 4.0, "name_context": "chat"}}),
                    "d1642f0cd5e8c2f0"),
    "nullspace": (lambda: PRESET.with_method("fe_alphaedit").replace(nullspace=NullSpace(0.01, 30.0)),
                  "72df9fdee6cf9f9b"),
    "templates": (lambda: PRESET.with_method("fe").replace(replay_on_templates=True), "c2f248864d1ed0e1"),
}


@pytest.mark.parametrize("name", CASES)
def test_stored_digests_do_not_move(name: str) -> None:
    build, digest = CASES[name]
    hp = build()
    assert _digest(hp.to_stored()) == digest
    assert EditHparams.from_stored(hp.to_stored()) == hp  # and the stored form reads back


def test_z_cache_keys_do_not_move() -> None:
    model = tiny_model()
    base = PRESET.replace(layers=(1, 2))
    keys = {
        "preset": (base, "7c8687dbe8d6d033"),
        "name_chat_4": (base.replace(chat=ChatTeaching(name_kl_factor=4.0, name_context=NameContext.CHAT)),
                        "d1e97f68d757dd80"),
    }
    cache = ZCache("unused")
    for name, (hp, key) in keys.items():
        assert cache.context_key(model, "fp", 2, hp, ["The", "{}"])[:16] == key, name


def test_stored_forms_of_earlier_versions_load() -> None:
    """A delta header written before methods were recorded names only the strategy; one
    written before a setting existed lacks it (its default)."""
    old = {"layers": [1, 2], "strategy": "backward_spread", "v_lr": 0.3, "v_steps": 7,
           "mom2_update_weight": 123.0}
    hp = EditHparams.from_stored(old)
    assert (hp.method_name, hp.z_lr, hp.z_steps, hp.covariance_weight) == ("memit", 0.3, 7, 123.0)
    assert hp.chat == ChatTeaching() and hp.nullspace == NullSpace()
    assert EditHparams.from_stored({"layers": [1], "strategy": "forward_replay"}).method is None
    with pytest.raises(ValueError, match="unknown stored"):
        EditHparams.from_stored({"layers": [1], "covariance_weight": 1.0})


@pytest.mark.parametrize(("old", "new"), [
    ("mom2_update_weight", "covariance_weight"), ("v_lr", "z_lr"), ("v_steps", "z_steps"),
    ("strategy", "method"), ("name_kl_factor", "chat.name_kl_factor"),
])
def test_names_of_earlier_versions_are_refused_naming_the_new_field(old: str, new: str) -> None:
    with pytest.raises(ValueError, match=f"'{old}' is no longer accepted: use '{new}'"):
        PRESET.with_overrides({old: 1})


def test_sub_configurations_take_nested_dicts_and_dotted_keys_and_check_them() -> None:
    a = PRESET.with_overrides({"chat": {"name_kl_factor": 4}, "nullspace.l2": 3.0})
    assert a.chat.name_kl_factor == 4 and a.chat.name_context is NameContext.SENTENCE
    assert a.nullspace.l2 == 3.0 and a.nullspace.threshold == NullSpace().threshold
    assert a.with_overrides({"chat": {"name_context": "chat"}}).chat.name_kl_factor == 4  # merged
    with pytest.raises(ValueError, match="unknown setting chat.nmae_context"):
        PRESET.with_overrides({"chat.nmae_context": "chat"})
    with pytest.raises(ValueError, match=r"name_context must be one of \['sentence', 'chat'\]"):
        PRESET.with_overrides({"chat.name_context": "forum"})
    assert EditHparams.from_dict(a.to_dict()) == a
    json.dumps(a.to_dict())  # JSON-ready: enums as their values


REMOVED_AT_DEFAULT = {"z_stop": "nll", "decay": "squared", "essence_kl": "initial_now"}
REFERENCE_Z_STORED = {**PRESET_STORED, "z_stop": "total", "decay": "linear", "essence_kl": "now_initial"}
"""The stored form of the reference code's z rules (switches removed on 2026-12-07), as
pinned under ``reference_z`` before their removal."""


def test_a_stored_form_with_the_removed_z_switches_at_the_behaviour_kept_loads() -> None:
    assert EditHparams.from_stored({**PRESET_STORED, **REMOVED_AT_DEFAULT}) == PRESET


def test_a_stored_form_that_used_a_removed_z_switch_is_refused_naming_it() -> None:
    assert _digest(REFERENCE_Z_STORED) == "7ae5322c27998f32"  # the very form written before
    with pytest.raises(ValueError, match="cannot be reproduced") as refused:
        EditHparams.from_stored(REFERENCE_Z_STORED)
    for shown in ("z_stop='total'", "decay='linear'", "essence_kl='now_initial'", "2026-12-07"):
        assert shown in str(refused.value)
    with pytest.raises(ValueError, match=r"decay='linear' \(z.decay, removed"):
        EditHparams.from_stored({**PRESET_STORED, "decay": "linear"})


@pytest.mark.parametrize("override", [
    {"z.stop": "total"}, {"z_stop": "nll"}, {"z.decay": "squared"}, {"decay": "linear"},
    {"z.essence_kl": "now_initial"}, {"essence_kl": "initial_now"}, {"z": {"stop": "total"}},
], ids=str)
def test_the_removed_z_switches_are_refused_as_input_naming_them(override: dict) -> None:
    name = next(iter(override))
    with pytest.raises(ValueError, match=f"'{name}' is no longer accepted: .*(removed|were removed)"):
        PRESET.with_overrides(override)
