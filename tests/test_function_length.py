"""No function of the platform is longer than MAX_LINES: its body, docstring included, from the first
statement to the last line (the signature and decorators do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mfd", "mfd_assets", "mfd_resources", "mfd_sensors", "bento", "bench")
MAX_LINES = 80

# Functions allowed over MAX_LINES, as "path:function", each with a comment saying why and until when.
# Empty since issue 28 split the last ones (bench/detection.py:freshness went under the limit in 5e244d1).
ALLOWED: frozenset[str] = frozenset()


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the function's first body statement (its docstring, if any) to its last line."""
    return (node.end_lineno or node.lineno) - node.body[0].lineno + 1


def long_functions(root: Path = ROOT, limit: int = MAX_LINES) -> dict[str, int]:
    """Every function (methods and nested functions too) under PACKAGES longer than `limit`, as
    "path:name" -> body lines."""
    found: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and body_lines(node) > limit:
                    found[f"{path.relative_to(root).as_posix()}:{node.name}"] = body_lines(node)
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    found = long_functions()
    new = {name: lines for name, lines in found.items() if name not in ALLOWED}
    listed = ", ".join(f"{name} ({lines})" for name, lines in sorted(new.items()))
    assert not new, f"functions over {MAX_LINES} lines (split them): {listed}"


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    (tmp_path / "mfd").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES + 1))
    (tmp_path / "mfd" / "long.py").write_text(
        f'def long():\n    """Doc."""\n{body}\n\n\ndef short():\n    pass\n'
    )
    assert long_functions(tmp_path) == {"mfd/long.py:long": MAX_LINES + 2}
