"""Free-threaded CPython (3.13t and later, ``--disable-gil``): pyparams runs with the GIL.

The walker and its caches assume the GIL (borrowed references into module dicts, per-class
tables filled on first sight), so ``pyparams._C`` does not declare ``Py_MOD_GIL_NOT_USED``:
importing it makes CPython enable the GIL for the rest of the process, with CPython's
``RuntimeWarning`` naming the module. Forcing the GIL off (``PYTHON_GIL=0``, ``-Xgil=0``)
makes ``import pyparams`` fail with an ``ImportError`` that says why, rather than walk
unprotected. These tests run only on free-threaded builds.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import threading

import pytest
import torch
from torch import nn

import pyparams
from common_utils import REPO, build_chain, reference, same_items, subprocess_env

pytestmark = pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"), reason="not a free-threaded CPython build"
)

GIL_WARNING = (
    "RuntimeWarning: The global interpreter lock (GIL) has been enabled to load module "
    "'pyparams._C'"
)


def _child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` importing this pyparams; ``PYTHON_GIL`` unset unless given."""
    environ = subprocess_env(**env)
    if "PYTHON_GIL" not in env:
        environ.pop("PYTHON_GIL", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO.parent,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_importing_pyparams_enables_the_gil_and_says_so() -> None:
    proc = _child(
        "import sys, torch\n"
        "before = sys._is_gil_enabled()\n"
        "import pyparams\n"
        "print(before, sys._is_gil_enabled())\n"
    )
    assert proc.returncode == 0, proc.stderr
    # torch runs without the GIL; pyparams turns it on, and CPython's warning names it.
    assert proc.stdout.split() == ["False", "True"], proc.stdout
    assert proc.stderr.count(GIL_WARNING) == 1, proc.stderr


def test_the_gil_forced_off_is_refused_at_import() -> None:
    proc = _child("import pyparams", PYTHON_GIL="0")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pyparams needs the GIL"), proc.stderr
    assert "PYTHON_GIL=0" in last, last


def test_this_process_runs_with_the_gil() -> None:
    assert sys._is_gil_enabled()


def _gpt2_shaped(blocks: int = 12) -> nn.Module:
    def block() -> nn.Module:
        attention = nn.ModuleDict(
            {
                "c_attn": nn.Linear(8, 24),
                "c_proj": nn.Linear(8, 8),
                "attn_dropout": nn.Dropout(),
                "resid_dropout": nn.Dropout(),
            }
        )
        mlp = nn.ModuleDict(
            {
                "c_fc": nn.Linear(8, 32),
                "c_proj": nn.Linear(32, 8),
                "act": nn.GELU(),
                "dropout": nn.Dropout(),
            }
        )
        return nn.ModuleDict(
            {"ln_1": nn.LayerNorm(8), "attn": attention, "ln_2": nn.LayerNorm(8), "mlp": mlp}
        )

    model = nn.ModuleDict(
        {
            "wte": nn.Embedding(64, 8),
            "wpe": nn.Embedding(16, 8),
            "h": nn.ModuleList(block() for _ in range(blocks)),
            "ln_f": nn.LayerNorm(8),
            "lm_head": nn.Linear(8, 64, bias=False),
        }
    )
    model["lm_head"].weight = model["wte"].weight  # tied, as GPT-2's head is
    model.register_buffer("causal_mask", torch.ones(4, 4))
    return model


@pytest.mark.parametrize(
    "name", ["parameters", "named_parameters", "named_modules", "buffers", "parameter_list"]
)
def test_walks_from_several_threads_give_torchs_answer(name: str) -> None:
    models = [_gpt2_shaped(), build_chain(300)]
    expected = [reference(name, m) for m in models]
    barrier = threading.Barrier(8)
    failures: list[str] = []

    def walk(index: int) -> None:
        try:
            barrier.wait()
            for round_ in range(50):
                which = (index + round_) % len(models)
                got = list(getattr(pyparams, name)(models[which]))
                if not same_items(got, expected[which]):
                    failures.append(f"thread {index}, walk {round_}: differs from torch")
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(f"thread {index}: {error!r}")

    threads = [threading.Thread(target=walk, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures[:5]
