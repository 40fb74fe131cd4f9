"""README.md is a short front page and docs/ holds the rest; these tests keep both honest.

Documentation rots silently: a page moves and its links break, an option is renamed and a command
in a code block stops working. Without a network or a federation (nothing is run), they check
that every relative link in README.md and docs/*.md names a file of the repository, that every
``fedlatent`` command of a shell code block parses with the real CLI parser, that the scripts and
tests named by ``python3`` commands exist, that ``flwr run --run-config`` strings use only real
run-config keys, and that README.md stays under 150 lines and links every page of docs/.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fedlatent.cli import build_parser
from fedlatent.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
FILES = [README, *PAGES]
SHELLS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*```\s*(\S*)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`]*`")
SEPARATORS = {"&&", "||", ";", "|", "&"}


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _blocks(text: str) -> tuple[list[str], str]:
    """The shell code blocks of a Markdown text, and the text outside every code block."""
    shell: list[str] = []
    prose: list[str] = []
    block: list[str] | None = None
    language = ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and block is None:
            block, language = [], fence.group(1).lower()
        elif fence and block is not None:
            if language in SHELLS:
                shell.append("\n".join(block))
            block = None
        elif block is not None:
            block.append(line)
        else:
            prose.append(line)
    return shell, "\n".join(prose)


def _commands(path: Path) -> list[list[str]]:
    """Every simple command of the file's shell blocks, as tokens (comments, `$ `, `\\` lines handled)."""
    commands: list[list[str]] = []
    for block in _blocks(path.read_text(encoding="utf-8"))[0]:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            try:
                tokens = list(lexer)
            except ValueError:  # prose in a plain ``` block (a directory tree); a broken command fails
                if re.match(r"(fedlatent|flwr|python3?) ", line):
                    raise ValueError(f"{_name(path)}: unbalanced quotes in {line!r}") from None
                continue
            command: list[str] = []
            for token in [*tokens, ";"]:
                if token not in SEPARATORS:
                    command.append(token)
                elif command:
                    commands.append(command)
                    command = []
    return commands


def _links(path: Path) -> list[str]:
    prose = CODE_SPAN.sub("", _blocks(path.read_text(encoding="utf-8"))[1])
    return LINK.findall(prose)


def _cases(kind: str) -> list[object]:
    cases: list[object] = []
    for path in FILES:
        for cmd in _commands(path):
            head = "python" if cmd[0] in ("python", "python3") else " ".join(cmd[:2]) if cmd[0] == "flwr" else cmd[0]
            if head == kind:
                cases.append(pytest.param(cmd, id=f"{_name(path)}: {' '.join(cmd)}"[:100]))
    return cases


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_relative_links_name_existing_files(path: Path) -> None:
    relative = [t for t in _links(path) if not t.startswith(("http://", "https://", "mailto:", "#"))]
    missing = [t for t in relative if not (path.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{_name(path)} links to missing files: {missing}"


@pytest.mark.parametrize("cmd", _cases("fedlatent"))
def test_fedlatent_command_parses(cmd: list[str]) -> None:
    try:
        build_parser().parse_args(cmd[1:])
    except SystemExit as exc:  # --help prints and exits 0; a bad command exits 2
        assert exc.code == 0 and {"-h", "--help"} & set(cmd), f"the CLI refuses: {shlex.join(cmd)}"
    missing = [a for a in cmd if a.endswith(".toml") and not (ROOT / a).exists()]
    assert not missing, f"{shlex.join(cmd)} names missing sweep files: {missing}"


@pytest.mark.parametrize("cmd", _cases("python"))
def test_python_command_names_existing_paths(cmd: list[str]) -> None:
    args = cmd[3:] if cmd[1:3] == ["-m", "pytest"] else cmd[1:2]
    paths = [a.split("::", 1)[0] for a in args if not a.startswith("-") and ("/" in a or a.endswith(".py"))]
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"{shlex.join(cmd)} names missing paths: {missing}"


@pytest.mark.parametrize("cmd", _cases("flwr run"))
def test_flwr_run_config_keys_exist(cmd: list[str]) -> None:
    strings = [v for k, v in zip(cmd, cmd[1:], strict=False) if k == "--run-config"]
    strings += [a.split("=", 1)[1] for a in cmd if a.startswith("--run-config=")]
    keys = {pair.split("=", 1)[0] for s in strings for pair in shlex.split(s)}
    assert keys <= set(RunConfig.keys()), f"unknown run-config keys: {sorted(keys - set(RunConfig.keys()))}"


def test_readme_is_a_front_page_linking_every_page() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150
    assert len(PAGES) >= 8
    targets = {t.split("#", 1)[0] for t in _links(README)}
    unlinked = [_name(p) for p in PAGES if _name(p) not in targets]
    assert not unlinked, f"README.md does not link {unlinked}"
    assert _cases("fedlatent"), "no fedlatent command found: the code-block reader is broken"
