"""The compose file hands every scope token to the containers as a Docker secret, under the
file name the settings read from the secrets directory, and none as an environment variable
(``docker inspect`` shows those)."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.settings import Settings
from tests.e2e.harness import REPO

SCOPE_TOKENS = ("api_token", "read_token", "admin_token")


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())


def test_the_scope_tokens_are_secrets_of_the_service_containers_not_environment() -> None:
    compose = _compose()
    for name in ("api", "worker"):
        service = compose["x-service"] | compose["services"][name]
        assert not [k for k in service.get("environment", {}) if "TOKEN" in k], name
        for token in SCOPE_TOKENS:
            secret = f"modeledit_{token}"
            assert secret in service["secrets"], (name, secret)
            assert compose["secrets"][secret] == {"environment": f"MODELEDIT_{token.upper()}"}


def test_the_settings_read_the_secret_files_compose_mounts(tmp_path: Path, monkeypatch) -> None:
    for token in SCOPE_TOKENS:
        monkeypatch.delenv(f"MODELEDIT_{token.upper()}", raising=False)
    for secret in _compose()["secrets"]:
        (tmp_path / secret).write_text(f"{secret}-value")
    (tmp_path / "modeledit_read_token").write_text("")  # set empty: the scope is off
    settings = Settings(_env_file="", _secrets_dir=tmp_path)
    assert settings.api_token.get_secret_value() == "modeledit_api_token-value"
    assert settings.admin_token.get_secret_value() == "modeledit_admin_token-value"
    assert settings.read_token is None
