"""The commands a reader copies from the README and docs/: every statement of a ```bash block, every
inline code span that starts with `.venv/bin/`, and every ```python block (run as a script)."""

from __future__ import annotations

import re
import shlex
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS: tuple[str, ...] = ("README.md", *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md"))))
_FENCE = re.compile(r"^\s*```(\w*)\s*$")
_INLINE = re.compile(r"`(\.venv/bin/[^`]+)`")


def _complete(statement: str) -> bool:
    if statement.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(statement, comments=True)
    except ValueError:  # a quote still open: the statement goes on
        return False
    return True


def _strip_comment(statement: str) -> str:
    """The statement without `# comments` outside quotes (to the end of their line), trailing blanks cut."""
    out, quote, skipping, prev = [], None, False, " "
    for char in statement:
        if skipping:
            if char == "\n":
                skipping = False
                out.append(char)
            continue
        if quote is None and char == "#" and prev.isspace():
            skipping = True
            continue
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        out.append(char)
        prev = char
    return "\n".join(line.rstrip() for line in "".join(out).splitlines()).strip()


def bash_statements(block: str) -> list[str]:
    """Complete shell statements of a block (continuation lines and open quotes joined)."""
    statements, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current = f"{current}\n{line}" if current else line
        if _complete(current):
            statements.append(_strip_comment(current))
            current = ""
    if current:
        statements.append(current)
    return statements


def documented() -> dict[str, list[str]]:
    """kind ("bash" | "python") -> the commands in document order (README first, then docs/ by name)."""
    found: dict[str, list[str]] = {"bash": [], "python": []}
    for name in DOCUMENTS:
        lines = (REPO / name).read_text().splitlines()
        kind, block = None, []
        for line in lines:
            fence = _FENCE.match(line)
            if fence and kind is None:
                kind, block = fence[1] or "text", []
                continue
            if fence:
                text = textwrap.dedent("\n".join(block))
                if kind == "bash":
                    found["bash"].extend(bash_statements(text))
                elif kind == "python":
                    found["python"].append(text)
                kind = None
                continue
            if kind is not None:
                block.append(line)
            else:
                found["bash"].extend(m.strip() for m in _INLINE.findall(line))
    return found
