"""benchmarks/gpu_check.sh cannot run here (no GPU): its syntax is checked with `bash -n`, and every
flag it passes to an hwnas command must be one that command takes."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hwnas.cli import main as hwnas

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def _help(command: list[str]) -> str:
    """What `hwnas COMMAND --help` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        hwnas([*command, "--help"])
    assert "usage:" in out.getvalue()
    return out.getvalue()


def _calls(text: str) -> list[list[str]]:
    """Each `$HWNAS ...` call of the script (continuation lines joined), as its words."""
    joined = text.replace("\\\n", " ")
    return [line.split("$HWNAS", 1)[1].split() for line in joined.splitlines() if "$HWNAS " in line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_flag_of_gpu_check_exists():
    calls = _calls(SCRIPT.read_text())
    commands = {tuple(c[:2]) if c[0] == "lut" else (c[0],) for c in calls}
    assert {("profile",), ("calibrate",), ("validate",), ("export",), ("backends",), ("search",)} <= commands
    for words in calls:
        command = words[:2] if words[0] == "lut" else words[:1]
        known = set(re.findall(r"--[a-z0-9-]+", _help(command)))
        flags = [w for w in words if re.fullmatch(r"--[a-z0-9-]+", w)]
        unknown = [f for f in flags if f not in known]
        assert not unknown, f"hwnas {' '.join(command)} has no {unknown}"
