"""The bot's modules import one way, along a job's flow, and none grows past ~400 lines.

    __main__ → app → cog, apps, history → lifecycle → studio → painting → delivery → ending
        → notices → buttons → ask
        → the plain parts (journal, scheduler, traffic, progress, intake, options, errors, ...)

A module may import only modules to its right: delivery never reaches back into painting or
the studio, and the plain parts import none of the layered ones. Imports under
`if TYPE_CHECKING:` are for type hints only (no import at run time) and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

BOT = Path(__file__).resolve().parent.parent / "bot"
LAYERS = [
    {"__main__"},
    {"app"},
    {"cog", "apps", "history"},
    {"lifecycle"},
    {"studio"},
    {"painting"},
    {"delivery"},
    {"ending"},
    {"notices"},
    {"buttons"},
    {"ask"},
]
PLAIN = len(LAYERS)  # every other module of bot/
MAX_LINES = 400


def layer(module: str) -> int:
    return next((i for i, names in enumerate(LAYERS) if module in names), PLAIN)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def bot_imports(tree: ast.AST) -> set[str]:
    """The bot modules a module imports at run time (at any depth, functions included)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("bot."))
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "bot":
                found.update(a.name for a in node.names)
            elif node.module.startswith("bot."):
                found.add(node.module.split(".")[1])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def modules() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(BOT.glob("*.py"))}


def test_bot_modules_import_only_along_the_flow() -> None:
    backwards = []
    for name, source in modules().items():
        for imported in bot_imports(ast.parse(source)):
            if imported != name and layer(imported) <= layer(name) and layer(name) != PLAIN:
                backwards.append(f"bot.{name} imports bot.{imported}")
            elif layer(name) == PLAIN and layer(imported) != PLAIN:
                backwards.append(f"bot.{name} (a plain part) imports bot.{imported}")
    assert not backwards, backwards


def test_the_checker_sees_a_backward_import() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bot.app import StyleBot\n"
        "def f():\n    from bot import studio\n    import bot.painting\n"
    )
    assert bot_imports(tree) == {"studio", "painting"}
    assert layer("painting") > layer("studio") > layer("cog") and layer("journal") == PLAIN


def test_no_bot_module_over_400_lines() -> None:
    sizes = {name: source.count("\n") for name, source in modules().items()}
    assert all(lines <= MAX_LINES for lines in sizes.values()), sizes
