"""The package: public API and signatures as README states them, stubs, import errors, and
the build: no torch among its requirements, a build without torch stopped at once with the
fix, an sdist built without torch that holds what setup.py compiles."""

from __future__ import annotations

import ast
import doctest
import importlib.metadata
import importlib.util
import inspect
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

import pyparams
from common_utils import REPO, subprocess_env
from pyparams import _C

PACKAGE = REPO / "pyparams"
# The source tree these tests came from (REPO is where pyparams is imported from: after a
# non-editable install, site-packages).
CHECKOUT = Path(__file__).resolve().parents[1]

REBUILD = "pip install --no-build-isolation"

# The public API of README's API section; names and signatures are part of the contract:
# (name, [(parameter, kind, default)]).
P, K = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
NO = inspect.Parameter.empty
PUBLIC_API = {
    "parameters": [("module", P, NO), ("recurse", P, True), ("remove_duplicate", P, True)],
    "trainable_parameters": [
        ("module", P, NO),
        ("recurse", P, True),
        ("remove_duplicate", P, True),
    ],
    "named_parameters": [
        ("module", P, NO),
        ("prefix", P, ""),
        ("recurse", P, True),
        ("remove_duplicate", P, True),
    ],
    "named_trainable_parameters": [
        ("module", P, NO),
        ("prefix", P, ""),
        ("recurse", P, True),
        ("remove_duplicate", P, True),
    ],
    "parameter_list": [
        ("module", P, NO),
        ("trainable", K, False),
        ("recurse", K, True),
        ("remove_duplicate", K, True),
    ],
    "buffers": [("module", P, NO), ("recurse", P, True), ("remove_duplicate", P, True)],
    "named_buffers": [
        ("module", P, NO),
        ("prefix", P, ""),
        ("recurse", P, True),
        ("remove_duplicate", P, True),
    ],
    "modules": [("module", P, NO), ("remove_duplicate", P, True)],
    "named_modules": [
        ("module", P, NO),
        ("prefix", P, ""),
        ("remove_duplicate", P, True),
        ("memo", K, None),
    ],
    "zero_grad": [("module", P, NO), ("set_to_none", P, True)],
    "patch": [],
    "unpatch": [],
    "is_patched": [],
    "patched": [],
    "cache_info": [],
    "cache_clear": [],
}


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(pyparams.__all__) == sorted(PUBLIC_API)
    assert len(pyparams.__all__) == len(set(pyparams.__all__))


def _readme_api_lines() -> list[str]:
    """The code lines of README's "## API" section (its fenced blocks, comments stripped)."""
    text = (CHECKOUT / "README.md").read_text()
    section = re.search(r"^## API\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    assert section, "README has no '## API' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.DOTALL | re.MULTILINE)
    return [line.split("  #")[0].rstrip() for block in blocks for line in block.splitlines()]


def _readme_line(name: str) -> str:
    """``pyparams.name(signature) -> return annotation``, as inspect.signature gives them."""
    signature = inspect.signature(getattr(pyparams, name))
    plain = signature.replace(
        parameters=[p.replace(annotation=NO) for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )
    return f"pyparams.{name}{plain} -> {signature.return_annotation}"


@pytest.mark.parametrize("name", list(PUBLIC_API))
def test_signature_matches_readme(name: str) -> None:
    signature = inspect.signature(getattr(pyparams, name))
    actual = [(p.name, p.kind, p.default) for p in signature.parameters.values()]
    assert actual == PUBLIC_API[name]
    assert _readme_line(name) in _readme_api_lines()


def test_readme_lists_exactly_the_public_api() -> None:
    listed = [line for line in _readme_api_lines() if re.match(r"pyparams\.\w+\(", line)]
    assert sorted(listed) == sorted(_readme_line(name) for name in PUBLIC_API)


@pytest.mark.parametrize("name", list(PUBLIC_API))
def test_public_functions_are_documented_and_annotated(name: str) -> None:
    """Each has an example, which ``make test`` runs: pyproject.toml collects the package's
    doctests (pyparams/ in testpaths, --doctest-modules)."""
    function = getattr(pyparams, name)
    assert doctest.DocTestParser().get_examples(function.__doc__ or "")  # a short example
    assert inspect.signature(function).return_annotation is not inspect.Signature.empty
    pyproject = (CHECKOUT / "pyproject.toml").read_text()
    assert re.search(r'^testpaths = \[.*"pyparams".*\]$', pyproject, re.MULTILINE)
    assert re.search(r'^addopts = \[.*"--doctest-modules".*\]$', pyproject, re.MULTILINE)
    assert not function.__module__.startswith("pyparams.bench")  # not collected (conftest.py)


@pytest.mark.parametrize("name", [n for n in PUBLIC_API if n.startswith(("named_", "buffers"))])
def test_torch_counterparts_take_the_same_arguments(name: str) -> None:
    """Every argument torch's method takes (but its internal memo) is taken too, same default."""
    import torch

    torch_method = getattr(torch.nn.Module, name.replace("_trainable", ""))
    ours = inspect.signature(getattr(pyparams, name)).parameters
    for parameter in inspect.signature(torch_method).parameters.values():
        if parameter.name in ("self", "memo"):
            continue
        assert parameter.name in ours
        assert ours[parameter.name].default == parameter.default


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("pyparams")
    except importlib.metadata.PackageNotFoundError:
        return None


# A checkout built in place and imported through PYTHONPATH (as on a bare GPU machine) has
# no distribution metadata to compare with.
@pytest.mark.skipif(_installed_version() is None, reason="pyparams is not pip-installed here")
def test_version_is_the_installed_distributions() -> None:
    """``__version__`` is what pip recorded for the install, a valid PEP 440 version."""
    assert Version(pyparams.__version__) == Version(_installed_version() or "")


def test_typing_files_are_shipped() -> None:
    assert (PACKAGE / "py.typed").is_file()
    assert (PACKAGE / "_C.pyi").is_file()


def test_stub_matches_the_extension() -> None:
    tree = ast.parse((PACKAGE / "_C.pyi").read_text())
    stubbed = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stubbed.add(node.target.id)
    public = {n for n in dir(_C) if not n.startswith("_")} | {"__version__", "__torch_version__"}
    assert stubbed == public


def _run(code: str, path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=subprocess_env([path]),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_refuses_an_extension_built_for_another_torch(tmp_path: Path) -> None:
    code = (
        "import torch\n"
        "torch.__version__ = '1.2.3'\n"
        "try:\n"
        "    import pyparams\n"
        "except ImportError as error:\n"
        "    print('ImportError:', error)\n"
        "else:\n"
        "    print('imported')\n"
    )
    done = _run(code, REPO, tmp_path)
    assert done.returncode == 0, done.stderr
    message = done.stdout
    assert message.startswith("ImportError:"), message
    assert "1.2.3" in message and _C.__torch_version__ in message
    assert REBUILD in message


def _copy_package(root: Path, source_tree: bool) -> Path:
    """A copy of the package under ``root`` without its extension; a checkout's files if asked."""
    copy = root / "pyparams"
    ignore = shutil.ignore_patterns("_C*.so", "_C*.pyd", "__pycache__")
    shutil.copytree(PACKAGE, copy, ignore=ignore)
    assert not list(copy.glob("_C*.so"))
    if source_tree:  # what the loader looks for to tell a checkout from an install
        (root / "setup.py").write_text("")
        (root / "csrc").mkdir()
    return copy


def _import_error(sys_path: list[Path], cwd: Path, **env: str) -> str:
    """The ImportError message of ``import pyparams`` with ``sys_path`` first, its traceback."""
    code = (
        # An editable install maps pyparams' modules to the source tree through a
        # meta-path finder; drop it so the copy without the extension is what loads.
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]\n"
        "try:\n"
        "    import pyparams\n"
        "except ImportError as error:\n"
        "    import traceback\n"
        "    print('ImportError:', error)\n"
        "    print('trace:', traceback.format_exc())\n"
        "else:\n"
        "    print('imported', pyparams.__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=subprocess_env(sys_path, **env),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ImportError:"), done.stdout
    return done.stdout


def test_an_install_without_the_extension_says_reinstall(tmp_path: Path) -> None:
    copy = _copy_package(tmp_path / "site", source_tree=False)
    message = _import_error([copy.parent], tmp_path)
    assert "installed without its native extension pyparams._C" in message
    assert f"{REBUILD} --force-reinstall --no-deps ." in message
    assert str(copy / "_extension.py") in message  # the copy was the one imported


# A non-editable install puts a pyparams folder on sys.path; a source tree copy then hides it
# and the loader reports that case instead (tested in the editable .venv make creates).
needs_no_installed_copy = pytest.mark.skipif(
    any((Path(entry) / "pyparams").is_dir() for entry in sys.path if entry),
    reason="an installed pyparams is on sys.path: the loader reports the hiding case here",
)


@needs_no_installed_copy
def test_a_source_tree_without_the_extension_says_build_in_place(tmp_path: Path) -> None:
    copy = _copy_package(tmp_path / "checkout", source_tree=True)
    message = _import_error([copy.parent], tmp_path)
    assert f"source tree {copy.parent}, where pyparams._C was never built" in message
    assert f"{REBUILD} -e ." in message and "python setup.py build_ext --inplace" in message
    assert "hides" not in message and "compiler" not in message


@needs_no_installed_copy
def test_a_source_tree_without_a_compiler_says_what_to_install(tmp_path: Path) -> None:
    copy = _copy_package(tmp_path / "checkout", source_tree=True)
    empty = tmp_path / "bin"
    empty.mkdir()
    message = _import_error([copy.parent], tmp_path, PATH=str(empty), CXX="c++")
    assert "no C++ compiler" in message and "apt-get install g++" in message
    assert f"{REBUILD} -e ." in message


def test_a_source_tree_hiding_the_installed_package_says_so(tmp_path: Path) -> None:
    """``python -m pytest`` in a checkout after a plain install: the checkout comes first."""
    copy = _copy_package(tmp_path / "checkout", source_tree=True)
    message = _import_error([copy.parent, REPO], tmp_path)
    assert f"it hides the installed pyparams in {REPO}" in message
    assert "Run `pytest` or `pyparams` itself" in message


def _unloadable_extension(tmp_path: Path, built_against: str | None) -> str:
    """The import error of an installed copy whose extension file does not load; the file
    names ``built_against`` as the torch it was compiled for, as the real one does."""
    copy = _copy_package(tmp_path / "site", source_tree=False)
    marker = (
        b""
        if built_against is None
        else (b"\0pyparams-built-against-torch=" + built_against.encode() + b"\0")
    )
    (copy / Path(_C.__file__).name).write_bytes(b"not a shared object" + marker)
    message = _import_error([copy.parent], tmp_path)
    assert "pyparams._C could not be loaded" in message
    assert f"{REBUILD} --force-reinstall --no-deps ." in message
    return message


def test_the_extension_file_names_the_torch_it_was_built_against() -> None:
    data = Path(_C.__file__).read_bytes()
    assert f"pyparams-built-against-torch={_C.__torch_version__}\0".encode() in data


def test_an_extension_built_for_another_torch_says_which(tmp_path: Path) -> None:
    message = _unloadable_extension(tmp_path, "1.13.0")
    assert f"built against torch 1.13.0, but torch {torch.__version__} is running" in message


def test_an_extension_for_this_torch_that_does_not_load_blames_no_torch(tmp_path: Path) -> None:
    message = _unloadable_extension(tmp_path, torch.__version__)
    assert "the cause is not a torch mismatch" in message and "another torch" not in message


def test_an_extension_that_names_no_torch_says_rebuild(tmp_path: Path) -> None:
    message = _unloadable_extension(tmp_path, None)
    assert "does not say which torch" in message and "another torch" in message


# --------------------------------------------------------------------------------------
# The build. torch is no build requirement: an isolated build (plain `pip install .`)
# would fetch the newest torch and compile against it. A build that sees no torch stops
# at once with one line naming `pip install --no-build-isolation .`; an sdist needs none.
# These run setup.py and the build backend in a copy of the checkout (nothing compiles,
# nothing is written here), with `import torch` failing as in pip's isolated build env.
# --------------------------------------------------------------------------------------

NO_TORCH_PRELUDE = (
    "import sys\n"
    "sys.modules['torch'] = None  # import torch fails; importlib.util.find_spec finds none\n"
    "sys.path.insert(0, '.')\n"
)


def _build_backend() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_backend", CHECKOUT / "build_backend.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_checkout(root: Path) -> Path:
    """The checkout's files under ``root``, without environments and build outputs."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {
            n
            for n in names
            if n in ("build", "dist", "bench-results", "__pycache__")
            or n.endswith((".egg-info", ".so", ".o"))
            or (n.startswith(".") and Path(folder, n).is_dir())  # .git, caches
            or (Path(folder, n) / "pyvenv.cfg").is_file()
        }

    copy = root / "checkout"
    shutil.copytree(CHECKOUT, copy, ignore=ignore)
    return copy


def _without_torch(code: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """``code`` run in a child Python, in ``cwd``, where ``import torch`` fails; its time."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-I", "-c", NO_TORCH_PRELUDE + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.perf_counter() - start


def test_torch_is_no_build_requirement() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    build_system = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["build-system"]
    names = [Requirement(r).name for r in build_system["requires"]]
    assert "torch" not in names
    # The backend that says what to do instead, found in the checkout (and the sdist).
    assert build_system["build-backend"] == "build_backend"
    assert (CHECKOUT / build_system["backend-path"][0] / "build_backend.py").is_file()
    # Its one line names the install command, and first everything that build needs.
    message = _build_backend().NO_TORCH
    assert "\n" not in message and message.endswith(f"then run `{REBUILD} .`")
    first = re.search(r"\(pip install ([^)]*)\)", message)
    assert first is not None, message
    assert shlex.split(first[1]) == ["torch", *build_system["requires"]]


@pytest.mark.parametrize(
    "hook",
    [
        "get_requires_for_build_wheel",
        "get_requires_for_build_editable",
        "prepare_metadata_for_build_wheel",
        "prepare_metadata_for_build_editable",
    ],
)
def test_a_wheel_build_without_torch_stops_at_its_first_hook(hook: str, tmp_path: Path) -> None:
    """pip calls one of these before it resolves (and downloads) pyparams' dependencies."""
    copy = _copy_checkout(tmp_path)
    argument = "" if hook.startswith("get_requires") else repr(str(tmp_path))
    done, seconds = _without_torch(
        f"import build_backend\nbuild_backend.{hook}({argument})\n", copy
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip() == _build_backend().NO_TORCH
    assert seconds < 30
    assert not list(copy.glob("*.egg-info")) and not list(tmp_path.glob("*.dist-info"))


@pytest.mark.parametrize(
    "command", [["build_ext", "--inplace"], ["bdist_wheel"]], ids=["build_ext", "bdist_wheel"]
)
def test_setup_py_without_torch_stops_before_compiling(command: list[str], tmp_path: Path) -> None:
    copy = _copy_checkout(tmp_path)
    code = (
        "import runpy\n"
        f"sys.argv = ['setup.py', *{command!r}]\n"
        "runpy.run_path('setup.py', run_name='__main__')\n"
    )
    done, seconds = _without_torch(code, copy)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines()[-1] == _build_backend().NO_TORCH
    assert seconds < 30
    assert "compile" not in done.stdout and not list(copy.rglob("*.o"))


def test_the_sdist_builds_without_torch_and_holds_the_sources(tmp_path: Path) -> None:
    """``python -m build --sdist`` runs these hooks in an environment without torch."""
    copy = _copy_checkout(tmp_path)
    dist = tmp_path / "dist"
    code = (
        "import build_backend\n"
        "assert build_backend.get_requires_for_build_sdist() == []\n"
        f"print(build_backend.build_sdist({str(dist)!r}))\n"
    )
    done, _ = _without_torch(code, copy)
    assert done.returncode == 0, done.stderr
    with tarfile.open(dist / done.stdout.strip().splitlines()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    needed = {
        "setup.py",
        "pyproject.toml",
        "build_backend.py",
        "README.md",
        "pyparams/py.typed",
        "pyparams/_C.pyi",
        "conftest.py",
        "docs/design.md",
    }
    needed |= {str(p.relative_to(CHECKOUT)) for p in (CHECKOUT / "csrc").glob("*/*.[ch]*")}
    assert any(n.endswith(".h") for n in needed)
    assert needed <= names, sorted(needed - names)
    assert not [n for n in names if n.endswith((".so", ".o"))]


def test_every_test_the_docs_name_exists() -> None:
    """README and docs cite tests as evidence (the design's table of user-code points, the
    reliability and performance figures): each file and function they name must exist."""
    sources = [*(CHECKOUT / "tests").rglob("test_*.py"), *(CHECKOUT / "benchmarks").glob("*.py")]
    files = {p.name for p in sources} | {str(p.relative_to(CHECKOUT)) for p in sources}
    functions = {name for p in sources for name in re.findall(r"def (test_\w+)\(", p.read_text())}
    missing = []
    for doc in [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for name in re.findall(r"[\w/]*test_\w+\.py", text):
            if name not in files:
                missing.append(f"{doc.name}: {name}")
        for name in re.findall(r"(?<![\w/.])(test_\w+)\b(?!\.py)", text):
            if name not in functions:
                missing.append(f"{doc.name}: {name}")
    assert not missing, missing
