"""Builds pyparams._C against the torch installed in this environment.

Install with ``pip install --no-build-isolation .`` so the build sees that torch. Without
torch, metadata and sdists still build; a command that would compile stops at once with one
line naming the fix (build_backend.py says it before pip resolves any dependency).
Switches (environment variables; DEBUG and PYPARAMS_SANITIZE are printed when set):
  DEBUG=1              -O0 -g instead of -O3 -g1
  PYPARAMS_SANITIZE=1  -fsanitize=address,undefined (run Python with the ASan runtime preloaded)
  VERBOSE=1            every compiler command line (default: one progress line per file)
  MAX_JOBS=N           compile N files at once (default: ninja's choice)
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from glob import glob

# torch warns at import when numpy is absent; the build never uses numpy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
# setuptools' generic caution about a package folder at the top of the checkout; the tests
# (pytest's importlib mode) and the loader's error message handle exactly that case.
warnings.filterwarnings("ignore", message="Editable installation")

from setuptools import Extension, find_packages, setup  # noqa: E402
from setuptools.command.build_ext import build_ext  # noqa: E402

from build_backend import NO_TORCH  # noqa: E402

try:
    import torch
    import torch.utils.cpp_extension as cpp_extension
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ModuleNotFoundError as error:
    if error.name != "torch":
        raise
    # Without torch, egg_info, dist_info and sdist run; build_ext is NoTorch (below), which
    # stops before compiling. BuildExt, never used then, derives from setuptools' build_ext.
    torch = None
    BuildExtension = build_ext

VERSION = "0.1.0"
DEBUG = os.getenv("DEBUG", "0") == "1"
SANITIZE = os.getenv("PYPARAMS_SANITIZE", "0") == "1"
VERBOSE = os.getenv("VERBOSE", "0") == "1"


def extension_flags() -> tuple[list[str], list[str]]:
    compile_args = [
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Wno-missing-field-initializers",
        # Only PyInit__C leaves the extension: calls between its files are direct
        # (no PLT stub), which a warm walk's per-item call pays for.
        "-fvisibility=hidden",
    ]
    link_args: list[str] = []
    if DEBUG:
        print("pyparams: DEBUG=1, building with -O0 -g")
        compile_args += ["-O0", "-g"]
    else:
        # -g1 overrides the -g of Python's own CFLAGS: line tables only, enough for
        # backtraces, perf and callgrind. Full debug info of torch's headers made the three
        # files that include them take 35 s each to compile instead of 13.
        compile_args += ["-O3", "-g1"]
    if SANITIZE:
        print("pyparams: PYPARAMS_SANITIZE=1, building with -fsanitize=address,undefined")
        sanitize = [
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=undefined",
        ]
        compile_args += sanitize  # the reports' lines come from -g1's line tables
        link_args += sanitize
    # The torch this extension is built against; pyparams refuses to load under another.
    compile_args += [
        f"-DPYPARAMS_VERSION={VERSION}",
        f"-DPYPARAMS_TORCH_VERSION={torch.__version__}",
    ]
    return compile_args, link_args


SOURCES = sorted(glob("csrc/**/*.cpp", recursive=True))  # reproducible: a stable order


def extensions() -> list[Extension]:
    if torch is None:  # named for the metadata and the sdist; NoTorch stops a compile
        return [Extension(name="pyparams._C", sources=SOURCES)]
    compile_args, link_args = extension_flags()
    return [
        CppExtension(
            name="pyparams._C",
            sources=SOURCES,
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]


def check_toolchain() -> None:
    """Stop early, naming what to install, rather than after a page of compiler errors."""
    cxx = os.environ.get("CXX", "c++").split()[0]
    if shutil.which(cxx) is None:
        sys.exit(
            f"pyparams: no C++ compiler ({cxx!r} is not on PATH). Install a C++17 compiler "
            "(Debian/Ubuntu: apt-get install g++; Fedora: dnf install gcc-c++; macOS: "
            "xcode-select --install) or point CXX at one, then build again."
        )
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.isfile(header):
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        sys.exit(
            f"pyparams: Python's headers are missing ({header}). Install them "
            f"(Debian/Ubuntu: apt-get install python{version}-dev; Fedora: dnf install "
            f"python{version}-devel), then build again."
        )


def run_ninja_compactly(build_directory: str, verbose: bool, error_prefix: str) -> None:
    """Stands in for torch's ninja runner, which runs ``ninja -v`` (every command line).

    Prints one ``[i/n] compile csrc/x.cpp`` line per file and the compiler's own
    output (warnings, errors, and on failure the failing command).
    """
    ninja_file = os.path.join(build_directory, "build.ninja")
    with open(ninja_file) as handle:
        text = handle.read()
    if "  description =" not in text:
        text = text.replace("rule compile\n", "rule compile\n  description = compile $in\n", 1)
        with open(ninja_file, "w") as handle:
            handle.write(text)
    jobs = ["-j", os.environ["MAX_JOBS"]] if os.environ.get("MAX_JOBS") else []
    here = os.getcwd() + os.sep
    sys.stdout.flush()
    with subprocess.Popen(
        ["ninja", *jobs],
        cwd=build_directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, NINJA_STATUS="[%f/%t] "),
    ) as ninja:
        assert ninja.stdout is not None
        for line in ninja.stdout:
            print(line.rstrip("\n").replace(here, ""), flush=True)
    if ninja.returncode != 0:
        raise RuntimeError(
            f"{error_prefix} (ninja exited with status {ninja.returncode}, its output is above)"
        )


class BuildExt(BuildExtension):
    """torch's BuildExtension, with a toolchain check, compact progress and kept objects."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if getattr(self, "editable_mode", False):
            # `pip install -e` compiles in a throwaway directory; build/ keeps the objects,
            # as `setup.py build_ext` does, so a rebuild recompiles only what changed.
            self.build_temp = os.path.join(
                "build", f"temp.{self.plat_name}-{sys.implementation.cache_tag}"
            )

    def build_extensions(self) -> None:
        check_toolchain()
        # A private torch function (checked for): without it, ninja's -v output is shown.
        if not VERBOSE and hasattr(cpp_extension, "_run_ninja_build"):
            cpp_extension._run_ninja_build = run_ninja_compactly
        super().build_extensions()


class NoTorch(build_ext):
    """build_ext where torch is missing: stops before compiling, with the one-line fix."""

    def run(self) -> None:
        sys.exit(NO_TORCH)


if __name__ == "__main__":
    setup(
        version=VERSION,
        packages=find_packages(include=["pyparams", "pyparams.*"]),
        package_data={"pyparams": ["py.typed", "_C.pyi"]},
        ext_modules=extensions(),
        cmdclass={"build_ext": NoTorch if torch is None else BuildExt.with_options(use_ninja=True)},
    )
