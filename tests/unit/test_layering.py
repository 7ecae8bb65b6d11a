"""The layering of the code, read from its imports (every import, a function's own included): the command line
(cli/) is at the top, and nothing below it imports it; and no new cycle between the top-level packages."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BELOW_THE_CLI = ("ledger", "commands", "projections", "api", "service", "finance", "web")
PACKAGES = (*BELOW_THE_CLI, "cli")

KNOWN_CYCLES = {frozenset({"commands", "projections"})}
"""commands/checkpoints.py reads the hash chain through projections/verify.py, which projections also use."""


def imports(package: str) -> Iterator[tuple[Path, str]]:
    """Each module a file of ``package`` imports, absolute."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                yield from ((path, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module


def depends_on() -> dict[str, set[str]]:
    """For each top-level package, the other top-level packages it imports."""
    return {package: {name.split(".")[0] for _, name in imports(package)} & set(PACKAGES) - {package}
            for package in PACKAGES}


def test_nothing_below_the_command_line_imports_it() -> None:
    offenders = [f"{path.relative_to(ROOT)} imports {name}" for package in BELOW_THE_CLI
                 for path, name in imports(package) if name == "cli" or name.startswith("cli.")]
    assert offenders == []


def test_the_command_line_is_imported_by_nothing_but_its_own_modules() -> None:
    graph = depends_on()
    assert [package for package, needs in graph.items() if "cli" in needs] == []
    assert graph["cli"], "the command line imports the packages below it"


def test_no_new_cycle_between_the_top_level_packages() -> None:
    graph = depends_on()
    cycles = {frozenset({a, b}) for a, needs in graph.items() for b in needs if a in graph[b]}
    longer = [package for package in PACKAGES if _reaches_itself(graph, package, KNOWN_CYCLES)]
    assert cycles <= KNOWN_CYCLES, cycles - KNOWN_CYCLES
    assert longer == [], f"a cycle through more than two packages: {longer}"


def _reaches_itself(graph: dict[str, set[str]], start: str, allowed: set[frozenset[str]]) -> bool:
    """Whether a path of imports from ``start`` comes back to it, leaving out the allowed two-package cycles."""
    def edges(a: str) -> set[str]:
        return {b for b in graph[a] if frozenset({a, b}) not in allowed}

    seen, frontier = set(), edges(start)
    while frontier:
        package = frontier.pop()
        if package == start:
            return True
        if package not in seen:
            seen.add(package)
            frontier |= edges(package)
    return False
