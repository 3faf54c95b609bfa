"""The command line: config errors are one line and exit 2; flags, YAML and env merge."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eagle.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["agent"], "config key 'origin': Field required"),
        (["agent", "--origin", "ftp://x"], "expected an http(s):// URL"),
        (["agent", "--origin", "http://x", "--download-rate", "5Q"], "'download-rate'"),
        (["agent", "--origin", "http://x", "--tracker", "http://t:1/x"], "/announce"),
        (["seeder", "--origin", "http://x", "--listen", "nonsense"], "'listen'"),
        (["tracker", "--listen", "[::1:80"], "'listen'"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eagle: ")
    assert message in lines[0]


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "eagle.yaml"
    config.write_text("listen: 127.0.0.1:0\nbogus-key: 1\n")
    result = runner.invoke(app, ["tracker", "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown config key 'bogus-key'" in result.stderr


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EAGLE_LISTEN", "not-an-address")
    result = runner.invoke(app, ["tracker"])
    assert result.exit_code == 2
    assert "not-an-address" in result.stderr


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "eagle", "tracker", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert "address already in use" in done.stderr.strip().splitlines()[-1]
