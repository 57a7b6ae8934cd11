"""convscope installs as one package: its rooms are ``convscope.<room>`` and nothing named ``cli``,
``train``, ``tracking`` or ``search`` lands in site-packages; ``python -m convscope`` is the command;
no room imports a room above it."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("tracking", "servers", "pictures", "train", "analysis", "search", "cli")  # bottom to top
MAY_IMPORT = {
    "tracking": set(), "servers": {"tracking"}, "pictures": {"tracking"}, "train": {"pictures", "tracking"},
    "analysis": {"train", "pictures", "tracking"}, "search": {"analysis", "train", "pictures", "tracking"},
    "cli": set(ROOMS),
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A normal (not editable) install of the wheel into a folder of its own."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: building writes build/ beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv*", "runs", "build", "*.egg-info",
                                                                 "__pycache__", "tests", "benchmarks", "docs", "docker"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(source), "-w", str(root / "wheel")], capture_output=True, text=True, cwd=root)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "wheel").glob("convscope-*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top == {"convscope", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, top
    zipfile.ZipFile(wheel).extractall(root / "site")
    return root / "site"


def test_the_wheel_holds_one_convscope_package(installed: Path) -> None:
    code = ("import convscope.train, convscope.tracking, convscope.search, convscope.analysis.depth, "
            "convscope.pictures.render, convscope.servers.servers, convscope.cli.main\n"
            "import importlib.util as u\n"
            "print(convscope.train.__file__)\n"
            "print([n for n in ('train', 'cli', 'tracking', 'search') if u.find_spec(n) is not None])")
    done = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(installed)!r}); {code}"],
                          capture_output=True, text=True, cwd=installed.parent)
    assert done.returncode == 0, done.stderr
    path, strays = done.stdout.splitlines()
    assert path.startswith(str(installed)) and strays == "[]"


def test_python_m_convscope_is_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "convscope", "--help"], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0 and "usage: convscope" in done.stdout, done.stderr


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_imports_only_the_rooms_below_it(room: str) -> None:
    wrong = []
    for path in sorted((REPO / room).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] in ROOMS:
                    wrong.append(f"{path.name}: {name} (not through convscope.)")
                elif parts[0] == "convscope" and len(parts) > 1 and parts[1] != room and parts[1] not in MAY_IMPORT[room]:
                    wrong.append(f"{path.name}: {name}")
    assert not wrong, wrong
