"""The service's settings: a bad value stops it at start with the setting's name (never a
traceback or a half-started service); every setting but the secrets is a flag that gives what its
variable gives; flags over environment over env file over secrets directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin

import pytest

from app.cli import main, parse, settings_from
from app.flags import env_names, flag_names, is_secret, secret_names
from app.settings import ENV_FILE_VAR, SECRETS_DIR_VAR, Settings
from tests.e2e.harness import REPO


@pytest.mark.parametrize("name,value,expected", [
    ("MODELEDIT_DTYPE", "int8", "MODELEDIT_DTYPE"),
    ("MODELEDIT_DEVICE_MAP", "{not json", "not valid JSON"),
    ("MODELEDIT_HPARAMS", '{"v_steps": 10}', "'v_steps' is no longer accepted: use 'z_steps'"),
    ("MODELEDIT_HPARAMS", '{"name_kl_factor": 4}', "use 'chat.name_kl_factor'"),
    ("MODELEDIT_HPARAMS", '{"z.stop": "total"}', "'z.stop' is no longer accepted: z.stop was removed"),
    ("MODELEDIT_HPARAMS", '{"z": {"essence_kl": "now_initial"}}', "'z' is no longer accepted"),
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


# -- sources: flags, environment, env file, secrets directory (issue 31) -----------------------

SPECIAL = {"method": "memit", "device_map": "auto", "log_level": "debug", "hparams": '{"layers": [1]}'}
"""Values a validator checks; every other setting gets a value derived from its type."""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:  # noqa: ANN001
    """No setting from this machine's environment, env file or secrets directory."""
    for name in Settings.model_fields:
        for variable in env_names(name):
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(ENV_FILE_VAR, "")
    monkeypatch.setenv(SECRETS_DIR_VAR, "")
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def sample(name: str) -> tuple[str, object]:
    """A text for ``name`` (as the environment and a flag would carry it) other than its default."""
    field = Settings.model_fields[name]
    default = Settings().__getattribute__(name)
    union = get_origin(field.annotation) in (Union, UnionType)
    kind = ([m for m in get_args(field.annotation) if m is not type(None)][0] if union
            else field.annotation)
    if name in SPECIAL:
        return SPECIAL[name], None
    if kind is bool:
        return ("false" if default else "true"), not default
    if get_origin(kind) is Literal:
        return str(get_args(kind)[-1]), None
    if kind is int:
        return str((default or 2) + 1), None
    if kind is float:
        return str((default or 2.0) + 0.5), None
    if kind is Path:
        return "/tmp/somewhere", None
    return "some-text", None


def test_every_setting_is_a_flag_except_the_secrets() -> None:
    secrets = set(secret_names())
    assert {"api_token", "read_token", "vllm_api_key"} <= secrets
    assert set(flag_names()) == set(Settings.model_fields) - secrets
    assert all(is_secret(Settings.model_fields[name]) for name in secrets)
    for command in ("serve", "api", "worker"):
        for name in secrets:
            with pytest.raises(SystemExit) as exit_info:
                parse([command, "--" + name.replace("_", "-"), "x"])
            assert exit_info.value.code == 2


@pytest.mark.parametrize("name", [n for n in Settings.model_fields if n not in secret_names()])
def test_a_flag_and_its_variable_give_the_same_setting(name: str, clean_env) -> None:  # noqa: ANN001
    text, _ = sample(name)
    default = getattr(Settings(), name)
    flag = flag_names()[name]
    kind = Settings.model_fields[name].annotation
    argv = (["api", flag if text == "true" else "--no-" + flag[2:]] if kind is bool
            else ["api", flag, text])
    from_flag = getattr(settings_from(parse(argv)), name)
    clean_env.setenv(env_names(name)[0], text)
    from_env = getattr(Settings(), name)
    assert from_flag == from_env != default, (name, text)


def test_precedence_flag_env_env_file_secrets_dir(clean_env, tmp_path) -> None:  # noqa: ANN001
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "modeledit_port").write_text("9000\n")
    (secrets / "modeledit_read_token").write_text("read-from-secret\n")  # Docker adds no newline; editors do
    env_file = tmp_path / "service.env"
    env_file.write_text("MODELEDIT_PORT=9001\nMODELEDIT_API_TOKEN=write-from-file\nREDIS_URL=redis://h:1/0\n")
    sources = ["--secrets-dir", str(secrets)]
    settings = settings_from(parse(["api", *sources]))
    assert settings.port == 9000 and settings.read_token.get_secret_value() == "read-from-secret"
    assert settings.api_token is None
    settings = settings_from(parse(["api", *sources, "--env-file", str(env_file)]))
    assert settings.port == 9001 and settings.api_token.get_secret_value() == "write-from-file"
    assert settings.redis_url == "redis://h:1/0"
    clean_env.setenv(ENV_FILE_VAR, str(env_file))  # the variable names the file as the flag does
    clean_env.setenv(SECRETS_DIR_VAR, str(secrets))
    assert Settings().port == 9001 and Settings().read_token.get_secret_value() == "read-from-secret"
    clean_env.setenv("MODELEDIT_PORT", "9002")
    assert settings_from(parse(["api"])).port == 9002
    assert settings_from(parse(["api", "--port", "9003"])).port == 9003
    # the api and worker processes `serve` starts read the same files
    env = Settings().child_env()
    assert env[ENV_FILE_VAR] == str(env_file) and env[SECRETS_DIR_VAR] == str(secrets)
    # ...so the tokens they hold stay in the files, not in every child's environment
    assert "MODELEDIT_API_TOKEN" not in env and "MODELEDIT_READ_TOKEN" not in env
    assert Settings(api_token="given").child_env()["MODELEDIT_API_TOKEN"] == "given"


def test_a_named_source_that_is_missing_stops_the_start(clean_env, tmp_path,  # noqa: ANN001
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["api", "--env-file", str(tmp_path / "absent.env")]) == 2
    assert "absent.env" in capsys.readouterr().err
    clean_env.setenv(SECRETS_DIR_VAR, str(tmp_path / "no-such-dir"))
    assert main(["api"]) == 2
    err = capsys.readouterr().err
    assert "no-such-dir" in err and "Traceback" not in err


def test_a_bad_flag_value_names_the_flag_and_the_variable(clean_env,  # noqa: ANN001
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["api", "--port", "eighty"]) == 2
    err = capsys.readouterr().err
    assert "--port" in err and "MODELEDIT_PORT" in err and "Traceback" not in err
