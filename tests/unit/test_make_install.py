"""What `make serve` / `make test` install. `serve` installs no test tooling and `test` adds the
extras and the browser (read from `make -n`); an old Python is refused before the venv is made;
scripts/install-torch.sh, the route to torch: with a CUDA GPU PyPI's build; without, the CPU
wheel index when it answers, else (or when it fails) the pinned PyPI wheel. pip is replaced by
a stand-in that records its arguments; the index is a real local HTTP server."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import REPO

SCRIPT = REPO / "scripts" / "install-torch.sh"
VERSION = "2.13.0"


@pytest.fixture
def index(tmp_path: Path) -> Iterator[str]:
    """A CPU wheel index that answers (its torch/ page exists)."""
    root = tmp_path / "index"
    (root / "torch").mkdir(parents=True)

    def handler(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(tmp_path: Path, index_url: str, gpu: bool, has_torch: bool = False,
        index_pip_fails: bool = False) -> list[str]:
    """Run the script with a stand-in python; return the pip command lines it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "pip.log"
    log.write_text("")
    python = bin_dir / "python"
    python.write_text(f"""#!/bin/sh
if [ "$1" = "-c" ]; then
  case "$2" in *"import torch"*) exit {0 if has_torch else 1};; esac
  exec {sys.executable} "$@"
fi
echo "$*" >> {log}
case "$*" in *--index-url*) exit {1 if index_pip_fails else 0};; esac
exit 0
""")
    smi = bin_dir / "nvidia-smi"  # present either way: on a machine without a GPU it fails
    smi.write_text('#!/bin/sh\necho "GPU 0: Test GPU (UUID: GPU-0)"\n' if gpu else "#!/bin/sh\nexit 9\n")
    for tool in (python, smi):
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TORCH_CPU_INDEX": index_url,
           "TORCH_INDEX_TIMEOUT": "5"}
    done = subprocess.run(["bash", str(SCRIPT), str(python), VERSION], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines()


def test_without_a_gpu_the_cpu_index_when_it_answers(tmp_path: Path, index: str) -> None:
    assert run(tmp_path, index, gpu=False) == [
        f"-m pip install -q --index-url {index} torch=={VERSION}"]


def test_without_a_gpu_pypi_when_the_index_does_not_answer(tmp_path: Path) -> None:
    assert run(tmp_path, f"http://127.0.0.1:{closed_port()}/whl/cpu", gpu=False) == [
        f"-m pip install -q torch=={VERSION}"]


def test_pypi_when_the_index_answers_but_its_install_fails(tmp_path: Path, index: str) -> None:
    assert run(tmp_path, index, gpu=False, index_pip_fails=True) == [
        f"-m pip install -q --index-url {index} torch=={VERSION}",
        f"-m pip install -q torch=={VERSION}"]


def test_with_a_gpu_pypis_cuda_build(tmp_path: Path, index: str) -> None:
    assert run(tmp_path, index, gpu=True) == [f"-m pip install -q torch=={VERSION}"]


def test_nothing_when_torch_is_there(tmp_path: Path, index: str) -> None:
    assert run(tmp_path, index, gpu=True, has_torch=True) == []


def make(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(REPO), f"VENV={tmp_path / 'venv'}", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")
def test_serve_installs_no_test_tooling_and_test_does(tmp_path: Path) -> None:
    serve = make(tmp_path, "-n", "serve").stdout
    assert "scripts/install-torch.sh" in serve and "pip install -q -e ." in serve
    assert "[test" not in serve and "chromium" not in serve and "[bench" not in serve
    test = make(tmp_path, "-n", "test").stdout
    assert 'pip install -q -e ".[test,bench]"' in test and "apt-get install" in test
    assert "pytest" in test


@pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")
def test_an_old_python_is_refused_before_the_venv(tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    old.write_text('#!/bin/sh\n[ "$1" = "--version" ] && echo "Python 3.10.12" && exit 0\n'
                   f'exec {sys.executable} -c "import sys; sys.exit(1)"\n')
    old.chmod(0o755)
    done = make(tmp_path, "serve", f"PYTHON={old}")
    assert done.returncode != 0
    assert "needs Python 3.11 or newer" in done.stderr and "Python 3.10.12" in done.stderr
    assert not (tmp_path / "venv").exists()
