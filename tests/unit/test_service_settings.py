"""The service's dtype / placement settings: a bad value stops it at start with the setting's
name, never a traceback or a half-started service."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.cli import main
from app.settings import Settings
from tests.e2e.harness import REPO


@pytest.mark.parametrize("name,value,expected", [
    ("MODELEDIT_DTYPE", "int8", "MODELEDIT_DTYPE"),
    ("MODELEDIT_DEVICE_MAP", "{not json", "not valid JSON"),
    ("MODELEDIT_HPARAMS", '{"v_steps": 10}', "'v_steps' is no longer accepted: use 'z_steps'"),
    ("MODELEDIT_HPARAMS", '{"name_kl_factor": 4}', "use 'chat.name_kl_factor'"),
])
def test_a_bad_setting_is_named_at_start(name: str, value: str, expected: str, monkeypatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(name, value)
    assert main(["api"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_dtype_and_device_map_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MODELEDIT_DTYPE", "bf16")
    monkeypatch.setenv("MODELEDIT_DEVICE_MAP", '{"model.layers.0": "cpu"}')
    settings = Settings()
    assert settings.dtype == "bf16" and settings.device_map == '{"model.layers.0": "cpu"}'
    assert settings.child_env()["MODELEDIT_DTYPE"] == "bf16"  # passed on to api/worker processes


def test_service_help_offers_dtype_and_device_map_on_a_cpu_too() -> None:
    out = subprocess.run([sys.executable, "-m", "app", "serve", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60).stdout
    assert "--dtype" in out and "--device-map" in out and "CPU" in out
