"""The public names of λ and z's step settings (covariance_weight, z_lr, z_steps), the papers'
names (mom2_update_weight, v_lr, v_steps) as aliases for one release, stored data read back
under the new names, and hashes that do not move with the names."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch

import editing.targets.zcache as zcache
from app.api.views import version_detail
from app.store import VersionStore
from app.store.payloads import EditJob, parse_payload
from app.store.records import dumps
from app.worker.strength import replay_weight
from editing import EditHparams, WeightDelta
from editing.hparams import public_names
from editing.methods import (
    LeastSquares,
    LeastSquaresConfig,
    NullSpaceConfig,
    NullSpaceProjection,
    get_method,
    is_null_space,
)
from editing.options import parse_overrides
from editing.presets import PRESETS
from editing.strength import with_strength
from editing.weights.delta import LayerUpdate

DEFAULT = PRESETS["smollm2-135m"]
OLD = {"layers": [1, 2], "strategy": "forward_replay", "mom2_update_weight": 500.0,
       "v_lr": 0.2, "v_steps": 7}
"""Hyper-parameters as every store has written them so far (the papers' names)."""
FACT = {"subject": "a", "prompt": "{} is", "target_new": "b"}


def _sha(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# -- hashes ---------------------------------------------------------------------------------
def test_the_stored_form_and_its_hash_are_those_of_the_release_before_the_rename() -> None:
    """Pinned at main 8124629 (``sha256(json.dumps(PRESETS[...].to_dict(), sort_keys=True))``
    there). A delta's content hash covers ``json.dumps(hparams, sort_keys=True)`` of this
    form, so equal here means equal delta hashes for the same edit."""
    stored = DEFAULT.stored_dict()
    assert {"mom2_update_weight", "v_lr", "v_steps"} <= set(stored)
    assert not {"covariance_weight", "z_lr", "z_steps", "method"} & set(stored)
    assert _sha(stored) == "605f2c87223e2f7f8b7c1fe385d1aab879959c17de91d959d6c0e695150e124e"
    assert _sha(DEFAULT.with_method("fe").stored_dict()) == (
        "1d10b3b934ccef644925d8ecd6d1aa30b6493249190b8458ce112b29c23a8640")
    assert _sha(DEFAULT.with_method("alphaedit").stored_dict()) == (
        "91db93153994735b67a378ac6356feff96a8dc4de24c133ee6d8f27693f7d75e")
    # the public form is the same settings under the new names
    assert public_names(stored) == DEFAULT.to_dict()
    assert DEFAULT.to_dict()["covariance_weight"] == 2000.0


def test_the_z_cache_key_of_the_default_preset_is_that_of_the_release_before_the_rename(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned at main 8124629 with the weights' digest fixed to ``"weights"``, so only the
    hyper-parameters, the layer, the fingerprint and the prefixes enter."""
    monkeypatch.setattr(zcache, "weights_digest", lambda model: "weights")
    key = zcache.ZCache("unused").context_key(None, "fingerprint", 3, DEFAULT, ["", "The"])
    assert key == "d9c5fa79e86bab1fc6bb1e4a5a8a2c5eb26d804e6d78d0687d34fa077882cb67"


# -- stored data with the papers' names reads back under the new ones -----------------------
def test_a_delta_header_with_the_old_names_reads_back_and_is_not_rewritten() -> None:
    delta = WeightDelta({1: LayerUpdate(torch.ones(3, 2))}, model_type="llama", hparams=OLD)
    data = delta.to_bytes()
    loaded = WeightDelta.from_bytes(data)
    assert loaded.hparams == OLD and loaded.sha256 == delta.sha256  # reading changes nothing
    hp = EditHparams.from_dict(loaded.hparams)
    assert (hp.covariance_weight, hp.z_lr, hp.z_steps) == (500.0, 0.2, 7)
    assert {key: hp.stored_dict()[key] for key in OLD} == OLD  # back to the stored names
    assert public_names(loaded.hparams)["covariance_weight"] == 500.0


def test_a_version_row_with_the_old_names_reads_back_under_the_new_ones(tmp_path: Path) -> None:
    store = VersionStore(tmp_path / "data")
    try:
        store.ensure_base("tiny", "f" * 64)
        job, _ = store.create_job({"facts": [FACT], "mom2_update_weight": 500.0})
        delta = WeightDelta({0: LayerUpdate(torch.ones(4, 3))}, model_type="llama", hparams=OLD)
        version = store.commit_version(
            job.id, "v0", delta.to_bytes(), delta.sha256, method="fe", hparams=OLD, facts=[FACT],
            diagnostics={"request": {"mom2_update_weight": 500.0}})
        row = store.get_version(version.id)
        assert row.hparams == OLD  # the row keeps what was written
        detail = version_detail(row, row.id)
        assert detail.hparams == public_names(OLD)
        assert detail.hparams["covariance_weight"] == 500.0 and "v_lr" not in detail.hparams
        assert detail.diagnostics["request"] == {"covariance_weight": 500.0}
        assert replay_weight(row.hparams, row.diagnostics) == 500.0
        assert EditHparams.from_dict(row.hparams).z_steps == 7
        # a job payload stored with the old key parses into the new field
        assert parse_payload(store.get_job(job.id).payload).covariance_weight == 500.0
    finally:
        store.close()


def test_an_older_json_of_hparams_reads_back() -> None:
    """Bench and evaluation outputs written before the rename (``"hparams": {...}``)."""
    text = json.dumps({"hparams": {**OLD, "nll_stop": 0.1}})
    hp = EditHparams.from_dict(json.loads(text)["hparams"])
    assert hp.covariance_weight == 500.0 and hp.nll_stop == 0.1


def test_the_job_payload_keeps_its_stored_key_and_idempotency_hash() -> None:
    before = {"kind": "edit", "facts": [{"subject": "a"}], "method": "fe",
              "mom2_update_weight": 500.0}  # a payload as the release before wrote it
    job = EditJob(facts=[{"subject": "a"}], method="fe", covariance_weight=500.0)
    assert job.to_json() == before and dumps(job.to_json()) == dumps(before)
    assert EditJob.model_validate(before).covariance_weight == 500.0


# -- the papers' names as input aliases ------------------------------------------------------
def test_from_dict_and_with_overrides_accept_the_old_names() -> None:
    hp = EditHparams.from_dict(OLD)
    assert hp == EditHparams(layers=(1, 2), covariance_weight=500.0, z_lr=0.2, z_steps=7)
    assert hp.with_overrides({"v_steps": 9}).z_steps == 9
    assert hp.with_overrides({"mom2_update_weight": 10.0}).covariance_weight == 10.0
    assert hp.replace(v_lr=0.3).z_lr == 0.3
    assert EditHparams.from_dict({**OLD, "z_steps": 7}).z_steps == 7  # both, agreeing


@pytest.mark.parametrize("both", [
    {"z_lr": 0.1, "v_lr": 0.2},
    {"covariance_weight": 1.0, "mom2_update_weight": 2.0},
    {"z_steps": 3, "v_steps": 4},
])
def test_both_names_with_different_values_is_an_error_naming_both(both: dict) -> None:
    new, old = both
    with pytest.raises(ValueError, match=rf"{new}=.*{old}=.*disagree"):
        EditHparams.from_dict({"layers": [1], **both})
    with pytest.raises(ValueError, match=rf"{new}=.*{old}="):
        EditHparams(layers=(1,)).with_overrides(both)


def test_the_constructor_and_attributes_accept_the_old_names_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="v_lr, v_steps: deprecated names"):
        hp = EditHparams(layers=(1,), v_lr=0.3, v_steps=4)
    assert (hp.z_lr, hp.z_steps) == (0.3, 4)
    with pytest.warns(DeprecationWarning, match="use covariance_weight"):
        assert hp.mom2_update_weight == hp.covariance_weight
    with pytest.warns(DeprecationWarning, match="use z_lr"):
        assert hp.v_lr == 0.3
    with pytest.raises(ValueError, match="disagree"), pytest.warns(DeprecationWarning):
        EditHparams(layers=(1,), z_lr=0.1, v_lr=0.3)


def test_the_cli_hparam_accepts_the_old_names_and_refuses_a_clash() -> None:
    args = argparse.Namespace(layers=None, hparam=["v_steps=5", "mom2_update_weight=100"])
    assert parse_overrides(args, DEFAULT) == {"z_steps": 5, "covariance_weight": 100.0}
    args = argparse.Namespace(layers=None, hparam=["v_steps=5", "z_steps=6"])
    with pytest.raises(SystemExit, match="z_steps=6 and v_steps=5 disagree"):
        parse_overrides(args, DEFAULT)


def test_the_cli_strategy_is_a_deprecated_alias_of_method(capsys: pytest.CaptureFixture) -> None:
    from editing.cli import build_parser, method_from_strategy

    args = build_parser().parse_args(["precompute-z", "--data", "x.json", "--strategy", "per_layer"])
    method_from_strategy(args)
    assert args.method == "per_layer" and "--strategy is deprecated" in capsys.readouterr().err
    args = build_parser().parse_args(["precompute-z", "--data", "x.json", "--method", "memit"])
    method_from_strategy(args)
    assert args.method == "memit" and capsys.readouterr().err == ""


def test_with_strength_takes_the_older_keyword() -> None:
    base = EditHparams(layers=(1,))
    assert with_strength(base, mom2_update_weight=700.0).covariance_weight == 700.0
    assert with_strength(base, None, 700.0).covariance_weight == 700.0
    with pytest.raises(ValueError, match="covariance_weight=1.*mom2_update_weight=2"):
        with_strength(base, None, 1.0, mom2_update_weight=2.0)


def test_strategy_is_a_deprecated_alias_of_its_default_method() -> None:
    old = EditHparams(layers=(1, 2), strategy="backward_spread")
    assert old.method is None and old.method_name == "memit"
    assert "method" not in old.stored_dict()  # stored as before
    new = EditHparams(layers=(1, 2), method="memit")  # the method alone is enough now
    assert new.strategy == "backward_spread" and new.stored_dict()["method"] == "memit"
    assert new == old.with_method("memit")
    with pytest.raises(ValueError, match="give only method"):
        EditHparams(layers=(1, 2), strategy="forward_replay", method="memit")


# -- typed solver configs --------------------------------------------------------------------
def test_each_solver_reads_its_own_typed_config() -> None:
    hp = EditHparams(layers=(1,), covariance_weight=123.0, l2=0.5, nullspace_threshold=0.1,
                     nullspace_l2=4.0)
    assert LeastSquares().config(hp) == LeastSquaresConfig(covariance_weight=123.0, l2=0.5)
    assert NullSpaceProjection().config(hp) == NullSpaceConfig(threshold=0.1, l2=4.0)
    assert get_method("fe").solver.config(hp) == LeastSquaresConfig(123.0, 0.5)
    with pytest.raises(ValueError, match="nullspace_l2 must be positive"):
        NullSpaceProjection().config(hp.replace(nullspace_l2=0.0))
    assert not is_null_space("fe") and not get_method("memit").null_space
    assert is_null_space("alphaedit") and get_method("fe_alphaedit").null_space
