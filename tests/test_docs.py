"""The documentation holds together: README.md stays a front page that opens with the two
commands, every relative link in README.md and docs/*.md reaches a file (and a heading, when
it names one), every Python block names the test that runs it, every JSON block parses, and
every ``backfill <command> --flag`` shown names a real command and its real flags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.docs import ROOT, doc_text, pages

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def fenced(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced blocks and code spans: where links are."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text(encoding="utf-8")))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)
    ]  # http:, https:, mailto:


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_reaches_a_file_and_its_heading(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file, _, fragment = target.partition("#")
        reached = (page.parent / file).resolve() if file else page
        if not reached.is_file():
            broken.append(f"{target}: no such file")
        elif fragment and fragment not in anchors(reached):
            broken.append(f"{target}: no heading #{fragment} in {reached.name}")
    assert not broken, f"{page.name}: {broken}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    unlinked = [p.name for p in pages()[1:] if p.resolve() not in linked]
    assert not unlinked


def test_the_readme_opens_with_the_two_commands() -> None:
    text = doc_text("README.md")
    assert text.startswith("# backfill\n\n```bash\n")  # the title, then the block, first
    language, block = fenced(text)[0]
    assert language == "bash"
    install_and_run, tests = block.splitlines()  # exactly two lines
    assert install_and_run.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert "pip install -e '.[test]'" in install_and_run
    assert "backfill run --gateway sim " in install_and_run
    assert "backfill verify --lake ./lake" in install_and_run
    assert tests == "pytest -n auto"
    assert "\npytest -n auto\n" in (ROOT / ".ci" / "run").read_text()  # CI runs that line


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_python_block_names_the_test_that_runs_it(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for match in FENCE.finditer(text):
        if match.group(1) != "python":
            continue
        before = text[: match.start()].rstrip().rsplit("\n\n", 1)[-1]  # the paragraph above
        named = re.findall(r"`(tests/[\w/]+\.py)`", before)
        assert named, f"{page.name}: a python block whose paragraph names no test:\n{before}"
        for test in named:
            assert (
                f'doc_text("{page.name}")' in (ROOT / test).read_text()
                or f'PAGE = "{page.name}"' in (ROOT / test).read_text()
            ), f"{test} does not read {page.name}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_json_block_parses(page: Path) -> None:
    for language, body in fenced(page.read_text(encoding="utf-8")):
        if language == "json":
            json.loads(body)


def command_lines(text: str) -> list[str]:
    """Every ``backfill <command> …`` the page shows: lines of its bash blocks and code spans."""
    found = []
    for language, body in fenced(text):
        if language in ("bash", "sh"):
            found += [line for line in body.replace("\\\n", " ").splitlines()]
    found += re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return [
        # not a path argument of another tool (`ruff check backfill tests scripts`)
        m.group(0)
        for line in found
        for m in re.finditer(r"(?<![\w/.-] )\bbackfill [a-z]+(?: [^|&;]*)?", line)
    ]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_command_shown_names_a_command_and_its_flags(page: Path) -> None:
    import typer

    from backfill.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    wrong = []
    for line in command_lines(page.read_text(encoding="utf-8")):
        name = line.split()[1]
        if name not in commands:
            wrong.append(f"{line}: no command {name}")
            continue
        flags = {"--help"} | {
            opt for param in commands[name].params for opt in [*param.opts, *param.secondary_opts]
        }
        wrong += [
            f"{line}: {name} has no {flag}"
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line)
            if flag not in flags
        ]
    assert not wrong, wrong
