"""Derived-feature expressions of a profile: arithmetic over sensor names, checked when the profile loads.

Allowed: sensor names, numbers, `pi`, + - * / ** and parentheses, and the functions `abs`, `sqrt`, `log`,
`exp`. Evaluated with numpy on arrays or Series, nothing else is reachable.
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np

_BINARY = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
_FUNCTIONS = {"abs": np.abs, "sqrt": np.sqrt, "log": np.log, "exp": np.exp}
_CONSTANTS = {"pi": np.pi}


class ExpressionError(ValueError):
    """An expression that names something other than a sensor, or uses an operation not allowed."""


class Expression:
    """One checked arithmetic expression over sensor columns."""

    def __init__(self, text: str, allowed: tuple[str, ...]) -> None:
        if not text.strip():
            raise ExpressionError("expected an arithmetic expression over the sensors")
        try:
            self._tree = ast.parse(text, mode="eval").body
        except SyntaxError as exc:
            raise ExpressionError(f"{text!r} is not an expression ({exc.msg})") from exc
        self.text = text
        self.names = tuple(sorted(self._check(self._tree, set(allowed))))

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def _check(self, node: ast.AST, allowed: set[str]) -> set[str]:
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return self._check(node.left, allowed) | self._check(node.right, allowed)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return self._check(node.operand, allowed)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return set()
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return set()
            if node.id not in allowed:
                raise ExpressionError(f"{node.id!r} is not a sensor of this profile")
            return {node.id}
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and len(node.args) == 1
            and not node.keywords
        ):
            return self._check(node.args[0], allowed)
        raise ExpressionError(
            f"{ast.unparse(node)!r}: only sensors, numbers, pi, + - * / ** and "
            f"{', '.join(_FUNCTIONS)} are allowed"
        )

    def evaluate(self, values: Any) -> Any:
        """The expression over `values` (a mapping of sensor name -> array or Series)."""
        return self._eval(self._tree, values)

    def _eval(self, node: ast.AST, values: Any) -> Any:
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, values), self._eval(node.right, values))
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, values)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return _CONSTANTS[node.id] if node.id in _CONSTANTS else values[node.id]
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](self._eval(node.args[0], values))
