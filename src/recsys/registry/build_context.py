"""The bento build context: the service folder plus only the ``recsys`` modules the service runs with.

A bento carries the code its service imports, nothing else: not the test fixtures (``serving.testing``), the
training code, the bench protocol or the serve tooling. The modules are the static import closure of the
service file within the ``recsys`` package: every ``import`` statement counts wherever it stands (module level,
inside a function, inside ``with bentoml.importing()``), except those under ``if TYPE_CHECKING:``, and each
module brings its parent packages (their ``__init__`` runs on import). So a lazy import on a request path is
shipped even if no test took that path. Imports must be statements: a module named by a string
(``importlib.import_module``) would not be seen.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import recsys
from recsys.config import Settings, project_dir
from recsys.errors import RegistryError

BENTO_SOURCE = Path("bentos") / "recommender"
SERVICE_FILE = "service.py"
PACKAGE = "recsys"


def runtime_modules(service: Path, package_dir: Path | None = None) -> dict[str, Path]:
    """``{module name: source file}`` of every ``recsys`` module ``service`` imports, transitively.

    ``package_dir`` is the ``recsys`` package folder (default: the one this code runs from).
    """
    package_dir = package_dir or Path(recsys.__file__).parent
    found: dict[str, Path] = {}
    todo = list(_imported_names(service, package=""))
    while todo:
        for module in _with_parents(todo.pop()):
            path = _source(module, package_dir)
            if path is None or module in found:
                continue
            found[module] = path
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            todo.extend(_imported_names(path, package))
    return dict(sorted(found.items()))


def _with_parents(name: str) -> Iterator[str]:
    """``a``, ``a.b``, ``a.b.c`` for ``a.b.c``: importing a module runs its parents' ``__init__`` first."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def _source(module: str, package_dir: Path) -> Path | None:
    """The source file of ``module`` when it is in the ``recsys`` package, else None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path, package: str) -> list[str]:
    """Every module name an import statement in ``path`` may load (``from a import b`` gives ``a`` and ``a.b``)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise RegistryError(f"cannot read the imports of {path}: {exc}") from exc
    names: list[str] = []
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement in ``body``, nested ones included, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in body:
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse)
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _statements([child])
            elif isinstance(child, ast.ExceptHandler | ast.match_case):
                yield from _statements(child.body)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of ``from <node.module> import ...`` written in ``package``."""
    if not node.level:
        return node.module or ""
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        return ""  # beyond the top-level package: not ours to resolve
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def stage_build_context(settings: Settings, target: Path) -> Path:
    """Copy ``bentos/recommender`` and the ``recsys`` modules its service imports into ``target`` (a bento
    build context); ``settings`` is the caller's (the service folder comes from the project directory)."""
    source = project_dir() / BENTO_SOURCE
    if not (source / "bentofile.yaml").is_file():
        raise RegistryError(f"{source} has no bentofile.yaml: set RECSYS_PROJECT_DIR to the repository root.")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    package_dir = Path(recsys.__file__).parent
    for path in runtime_modules(source / SERVICE_FILE, package_dir).values():
        staged = target / PACKAGE / path.relative_to(package_dir)
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, staged)
    return target
