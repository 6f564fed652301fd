"""The docs cannot rot: every command they show is run, every link they make resolves (file and
heading).

The convention, for README.md and docs/*.md:

- A fenced block marked ```sh, ```bash or ```console holds commands. In `sh`/`bash` blocks every
  line is a command; in `console` blocks the lines starting with `$ ` are (the rest is output).
  A line ending in `\\` continues on the next; `# ...` is a comment. Other blocks (```text, a
  bare ```) are never run: use them for output and file layouts, not for commands.
- The commands of a page run in order, in one fresh folder per page that stands where the
  repository root would: `../shared/` is the shared data folder and `deploy/` the repository's,
  so a page writes `../shared/data/...` exactly as a user types it in the repository root. A page
  whose commands read that folder (they name `../shared/`, or use `--evaluator nb201`, whose
  table lies there) is skipped, with the reason, where it is absent.
- `hwnas ARGS` runs `hwnas.cli.main(ARGS)` in this process: exactly what `python -m hwnas ARGS`
  and the `hwnas` script call (hwnas/__main__.py), without paying the 6 s import for every
  command. `python SCRIPT ARGS` runs the script with this interpreter. A glob is expanded as the
  shell would. Any other command is an error: show it in a skipped block.
- Each must exit 0, or the code that `<!-- doctest: exit N -->` on the line before the block
  names (for commands that demonstrate a refusal).
- `<!-- doctest: skip (reason) -->` on the line before a block leaves it out; the reason is
  required and shows in pytest's skip report (GPU, a Ray cluster address, `make` itself).
"""

from __future__ import annotations

import glob
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hwnas.cli import main as hwnas

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGUAGES = {"sh", "bash", "console"}
MARKER = re.compile(r"<!--\s*doctest:\s*(?P<what>skip|exit)\s*(?P<arg>.*?)\s*-->")
README_MAX_LINES = 200


@dataclass
class Command:
    line: int  # 1-based line of the page where the command starts
    text: str


@dataclass
class Block:
    page: Path
    line: int  # the opening fence
    skip: str | None = None  # the reason
    exit_code: int = 0
    commands: list[Command] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        language, start = fence.group(1), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if language not in RUN_LANGUAGES:
            continue
        block = Block(page, start + 1)
        previous = lines[start - 1] if start else ""
        marker = MARKER.search(previous)
        if marker and marker["what"] == "skip":
            block.skip = marker["arg"].strip("() ")
        elif marker:
            block.exit_code = int(marker["arg"])
        block.commands = commands_of(body, console=language == "console")
        blocks.append(block)
    return blocks


def commands_of(body: list[tuple[int, str]], console: bool) -> list[Command]:
    commands, pending = [], None
    for number, raw in body:
        text = raw.strip()
        if pending is None:
            if console:
                if not text.startswith("$ "):
                    continue
                text = text[2:]
            if not text or text.startswith("#"):
                continue
            pending = Command(number, "")
        pending.text += " " + text.rstrip("\\").strip() if pending.text else text.rstrip("\\").strip()
        if not text.endswith("\\"):
            commands.append(pending)
            pending = None
    if pending is not None:
        commands.append(pending)
    return commands


ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]
SKIPPED = [block for block in ALL_BLOCKS if block.skip is not None]


def run_command(command: Command, cwd: Path) -> tuple[int, str]:
    argv = []
    for token in shlex.split(command.text, comments=True):
        matches = sorted(glob.glob(token, root_dir=cwd)) if glob.has_magic(token) else []
        argv.extend(matches or [token])
    if argv[0] == "hwnas":
        return hwnas(argv[1:]), ""
    if argv[0] == "python":
        done = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout + done.stderr
    pytest.fail(f"{command.text!r} (line {command.line}) is neither `hwnas ...` nor `python ...`: "
                "mark its block <!-- doctest: skip (reason) -->")


def needs_shared(command: Command) -> bool:
    """A command reads the shared folder when it names it, or looks NAS-Bench-201 up there."""
    return "../shared/" in command.text or "--evaluator nb201" in command.text


def page_folder(tmp_path: Path) -> Path:
    """A folder standing where the repository root would: ../shared and deploy/ resolve."""
    work = tmp_path / "repo"
    work.mkdir()
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    (work / "deploy").symlink_to(ROOT / "deploy")
    return work


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_of_the_page_runs(page, tmp_path, monkeypatch, capsys):
    blocks = [block for block in blocks_of(page) if block.skip is None and block.commands]
    if not blocks:
        pytest.skip(f"{page.name} shows no runnable command")
    if not SHARED.is_dir() and any(needs_shared(c) for block in blocks for c in block.commands):
        pytest.skip(f"{page.name} uses the shared data folder {SHARED}, absent here")
    work = page_folder(tmp_path)
    monkeypatch.chdir(work)
    timings = []
    for block in blocks:
        for command in block.commands:
            start = time.perf_counter()
            code, output = run_command(command, work)
            timings.append(f"{time.perf_counter() - start:6.1f} s  line {command.line}: {command.text[:100]}")
            captured = capsys.readouterr()
            output = captured.out + captured.err + output
            assert code == block.exit_code, (
                f"{page.relative_to(ROOT)}:{command.line}: `{command.text}` exited {code}, "
                f"expected {block.exit_code}\n{output[-3000:]}")
    print("\n".join(timings))  # shown by `pytest -rP`: where a page's time goes


@pytest.mark.parametrize("block", SKIPPED, ids=lambda b: b.id)
def test_skipped_blocks_state_their_reason(block):
    assert block.skip, f"{block.id}: a skipped block states its reason: <!-- doctest: skip (reason) -->"
    pytest.skip(f"{block.id}: {block.skip}")


def test_readme_stays_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; topics belong in docs/"


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def anchors_of(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor of the page itself
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve()
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors_of(path)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"
