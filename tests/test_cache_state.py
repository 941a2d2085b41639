"""Whether the warm-walk cache is on, why not, and the cache beside dynamo's own dict watchers.

The cache decides once, at import, whether it can prove dicts unchanged; ``cache_info()``
says whether it is on and, when it is not, why. On CPython 3.12+ its proof is a dict
watcher, one of CPython's few slots, which torch's dynamo also takes.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import pyparams
from common_utils import reference, run_python, same_items

# A dict watcher needs 3.12; 3.13.0 never registers one, and free-threaded builds have no cache.
WATCHERS = (
    sys.version_info >= (3, 12)
    and sys.version_info[:3] != (3, 13, 0)
    and pyparams.cache_info().enabled
)


def _run(script: str, **env: str) -> list[str]:
    done = run_python(script, timeout=300, **env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_off_reason_is_empty_while_on_and_names_why_when_off() -> None:
    info = pyparams.cache_info()
    assert isinstance(info.off_reason, str)
    assert (info.off_reason == "") == info.enabled
    lines = _run(
        "import pyparams\n"
        "info = pyparams.cache_info()\n"
        "print(info.enabled)\n"
        "print(info.off_reason)\n",
        PYPARAMS_CACHE="0",
    )
    assert lines == ["False", "PYPARAMS_CACHE=0 in the environment at import"]


# Takes every dict-watcher slot CPython has left, through its own C API, then imports pyparams
# (torch first: its import takes a slot of its own, and fails without one).
_FILL_WATCHER_SLOTS = """
import ctypes
import torch
WATCH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p)
callback = WATCH(lambda event, dictionary, key, value: 0)
add_watcher = ctypes.pythonapi.PyDict_AddWatcher
add_watcher.argtypes = [WATCH]
add_watcher.restype = ctypes.c_int
taken = []
while True:
    try:
        taken.append(add_watcher(callback))
    except RuntimeError:  # CPython's "no more dict watcher IDs available"
        break
assert taken, "no dict-watcher slot was free to take"
import pyparams
"""


@pytest.mark.skipif(not WATCHERS, reason="the cache uses no dict watcher on this CPython")
def test_with_every_watcher_slot_taken_the_cache_is_off_says_why_and_walks_live() -> None:
    lines = _run(
        _FILL_WATCHER_SLOTS
        + "net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))\n"
        "for _ in range(3):\n"
        "    assert [p is q for p, q in zip(pyparams.parameters(net), net.parameters())] == [\n"
        "        True, True, True, True]\n"
        "    assert len(pyparams.parameter_list(net)) == 4\n"
        "pyparams.cache_clear()\n"  # stays off: the slots were decided at import, once
        "list(pyparams.parameters(net)); list(pyparams.parameters(net))\n"
        "info = pyparams.cache_info()\n"
        "print(info.enabled, info.hits, info.records)\n"
        "print(info.off_reason)\n"
    )
    assert lines == [
        "False 0 0",
        "every one of CPython's dict-watcher slots was taken at import",
    ]


@pytest.mark.skipif(not pyparams.cache_info().enabled, reason="the walk cache is off")
def test_the_cache_and_dynamo_watch_the_same_dicts() -> None:
    """A compiled model walked warm, changed, walked again and recompiled: each sees the
    change, whichever of the two (dynamo's guards, pyparams' records) looked first."""
    dynamo = pytest.importorskip("torch._dynamo")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 4)

    def walks_agree() -> None:
        for function in ("parameters", "named_parameters", "named_modules", "parameter_list"):
            assert same_items(
                list(getattr(pyparams, function)(model)), reference(function, model)
            ), function

    dynamo.reset()
    pyparams.cache_clear()
    compiled = torch.compile(model, backend="eager")
    assert torch.equal(compiled(x), model(x))
    for _ in range(3):
        walks_agree()
    assert pyparams.cache_info().hits > 0  # replayed while dynamo watches the same dicts
    model[2].weight = nn.Parameter(torch.zeros(2, 4))  # seen by both
    model.add_module("tail", nn.Linear(2, 2))
    walks_agree()
    assert torch.equal(compiled(x), model(x))  # dynamo recompiled
    hits = pyparams.cache_info().hits
    for _ in range(3):
        walks_agree()
    assert pyparams.cache_info().hits > hits  # recorded anew and replayed
    model.tail.bias.data.zero_()  # a tensor's data: no dict changes, no walk changes
    walks_agree()
    assert torch.equal(compiled(x), model(x))
    dynamo.reset()
