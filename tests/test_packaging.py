"""The package: public API and signatures as DESIGN.md states them, stubs, import errors."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

import pyparams
from common_utils import REPO, subprocess_env
from pyparams import _C

PACKAGE = REPO / "pyparams"
REBUILD = "pip install --no-build-isolation"

# The public API of DESIGN.md, "names and signatures are part of the contract":
# (name, [(parameter, kind, default)]).
P, K = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
NO = inspect.Parameter.empty
DESIGN_API = {
    "parameters": [("module", P, NO), ("recurse", P, True), ("remove_duplicate", P, True)],
    "trainable_parameters": [("module", P, NO), ("recurse", P, True), ("remove_duplicate", P, True)],
    "named_parameters": [("module", P, NO), ("prefix", P, ""), ("recurse", P, True),
                         ("remove_duplicate", P, True)],
    "named_trainable_parameters": [("module", P, NO), ("prefix", P, ""), ("recurse", P, True),
                                   ("remove_duplicate", P, True)],
    "parameter_list": [("module", P, NO), ("trainable", K, False), ("recurse", K, True),
                       ("remove_duplicate", K, True)],
    "buffers": [("module", P, NO), ("recurse", P, True), ("remove_duplicate", P, True)],
    "named_buffers": [("module", P, NO), ("prefix", P, ""), ("recurse", P, True),
                      ("remove_duplicate", P, True)],
    "modules": [("module", P, NO), ("remove_duplicate", P, True)],
    "named_modules": [("module", P, NO), ("prefix", P, ""), ("remove_duplicate", P, True)],
}


def test_all_is_exactly_the_design_api() -> None:
    assert sorted(pyparams.__all__) == sorted(DESIGN_API)
    assert len(pyparams.__all__) == len(set(pyparams.__all__))


@pytest.mark.parametrize("name", list(DESIGN_API))
def test_signature_matches_design(name: str) -> None:
    signature = inspect.signature(getattr(pyparams, name))
    actual = [(p.name, p.kind, p.default) for p in signature.parameters.values()]
    assert actual == DESIGN_API[name]


@pytest.mark.parametrize("name", list(DESIGN_API))
def test_public_functions_are_documented_and_annotated(name: str) -> None:
    function = getattr(pyparams, name)
    assert function.__doc__ and ">>>" in function.__doc__  # a short example
    assert inspect.signature(function).return_annotation is not inspect.Signature.empty


@pytest.mark.parametrize("name", [n for n in DESIGN_API if n.startswith(("named_", "buffers"))])
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


def test_version_is_the_installed_distributions() -> None:
    """``__version__`` is what pip recorded for the install, a valid PEP 440 version."""
    assert Version(pyparams.__version__) == Version(importlib.metadata.version("pyparams"))


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
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=subprocess_env([path]),
                          capture_output=True, text=True, timeout=300)


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


def test_import_without_the_extension_names_the_fix(tmp_path: Path) -> None:
    copy = tmp_path / "site" / "pyparams"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd", "__pycache__"))
    assert not list(copy.glob("_C*.so"))
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
    done = _run(code, tmp_path / "site", tmp_path)
    assert done.returncode == 0, done.stderr
    message = done.stdout
    assert message.startswith("ImportError:"), message
    assert "pyparams._C" in message and REBUILD in message
    assert str(copy / "_extension.py") in message  # the copy was the one imported
