"""The project's documentation as tests read it: README.md (the front page) and docs/*.md,
whose code lines the tests run as written."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def doc_path(name: str) -> Path:
    """``"README.md"`` or a page of ``docs/`` by its file name (``"lake.md"``)."""
    return ROOT / name if name == "README.md" else ROOT / "docs" / name


def doc_text(name: str) -> str:
    return doc_path(name).read_text(encoding="utf-8")


def pages() -> list[Path]:
    """README.md and every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
