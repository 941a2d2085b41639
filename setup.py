"""Builds pyparams._C against the torch installed in this environment.

Install with ``pip install --no-build-isolation .`` so the build sees that torch.
Switches (environment variables), each printed when set:
  DEBUG=1              -O0 -g instead of -O3
  PYPARAMS_SANITIZE=1  -fsanitize=address,undefined (run Python with the ASan runtime preloaded)
"""

import os
from glob import glob

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

VERSION = "0.1.0"
DEBUG = os.getenv("DEBUG", "0") == "1"
SANITIZE = os.getenv("PYPARAMS_SANITIZE", "0") == "1"


def extension_flags() -> tuple[list[str], list[str]]:
    compile_args = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    link_args: list[str] = []
    if DEBUG:
        print("pyparams: DEBUG=1, building with -O0 -g")
        compile_args += ["-O0", "-g"]
    else:
        compile_args += ["-O3"]
    if SANITIZE:
        print("pyparams: PYPARAMS_SANITIZE=1, building with -fsanitize=address,undefined")
        sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        compile_args += sanitize + ["-g"]
        link_args += sanitize
    # The torch this extension is built against; pyparams refuses to load under another.
    compile_args += [f"-DPYPARAMS_VERSION={VERSION}", f"-DPYPARAMS_TORCH_VERSION={torch.__version__}"]
    return compile_args, link_args


def extensions() -> list[CppExtension]:
    compile_args, link_args = extension_flags()
    return [
        CppExtension(
            name="pyparams._C",
            sources=sorted(glob("csrc/*.cpp")),
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]


if __name__ == "__main__":
    setup(
        version=VERSION,
        packages=find_packages(include=["pyparams", "pyparams.*"]),
        package_data={"pyparams": ["py.typed", "_C.pyi"]},
        ext_modules=extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )
