"""``serve --secrets-dir``: the token in a Docker-style secrets directory guards the API that
``serve`` starts, and never becomes an environment variable of its processes."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.harness import Service, wait_ready
from tests.e2e.test_service_serve import descendants

FACT = {"subject": "Danielle Darrieux", "prompt": "The mother tongue of {} is",
        "target_new": "English"}


def test_the_token_comes_from_the_secrets_directory(tiny_service: Service, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    token = "s3cret-from-a-file"
    (secrets / "modeledit_api_token").write_text(token)
    serve = tiny_service.start("serve", "--secrets-dir", str(secrets), REDIS_URL="")
    wait_ready(serve)
    with httpx.Client(base_url=serve.url, timeout=60) as client:
        assert client.post("/edits", json={"facts": [FACT]}).status_code == 401
        accepted = client.post("/edits", json={"facts": [FACT]},
                               headers={"Authorization": f"Bearer {token}"})
        assert accepted.status_code == 202, accepted.text
    for pid in {serve.popen.pid, *descendants(serve.popen.pid)}:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        assert token.encode() not in environ, f"the token is in the environment of {pid}"
    assert token not in serve.log()
