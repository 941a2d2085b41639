"""Huge trees: a million modules in flat memory, Ctrl-C honoured, allocation failure as MemoryError.

The trees are built cheaply: module objects made with ``__new__`` whose member
mappings are class attributes (shared empty dicts), so a million modules cost
~100 MB and a second to build, not the gigabytes of a million ``nn.Module()``.
pyparams only reads ``_parameters`` / ``_buffers`` / ``_modules``, exactly as
torch's generators do, so these are real modules to both.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import psutil
import pytest

import pyparams
from common_utils import assert_same_items, reference, subprocess_env, torch_iterator

SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")

# Shared by the test code and the subprocess scripts below.
BUILDERS = textwrap.dedent(
    '''
    import torch
    from torch import nn

    class Leaf(nn.Module):
        """A module with no members of its own, built without __init__."""
        _parameters = {}
        _buffers = {}
        _modules = {}

    class Node(nn.Module):
        """A module whose only state is its own _modules dict."""
        _parameters = {}
        _buffers = {}

        def __init__(self, children):
            self.__dict__["_modules"] = children

    def wide_tree(fanout):
        """root -> fanout nodes -> fanout leaves each: fanout**2 + fanout + 1 modules."""
        keys = [str(i) for i in range(fanout)]
        new = Leaf.__new__
        return Node({k: Node({key: new(Leaf) for key in keys}) for k in keys})

    def shared_dag(fanout, levels):
        """fanout**levels paths through levels + 1 distinct modules (no cycle)."""
        node = Leaf.__new__(Leaf)
        for _ in range(levels):
            node = Node(dict.fromkeys([str(i) for i in range(fanout)], node))
        return node

    def chain(depth):
        node = Leaf.__new__(Leaf)
        for _ in range(depth):
            node = Node({"c": node})
        return node
    '''
)
_BUILDERS: dict[str, object] = {}
exec(BUILDERS, _BUILDERS)  # the very builders the subprocess scripts run
wide_tree, shared_dag, chain = (_BUILDERS[name] for name in ("wide_tree", "shared_dag", "chain"))
Leaf, Node = _BUILDERS["Leaf"], _BUILDERS["Node"]


def run_script(body: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    script = BUILDERS + "\nimport pyparams\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env),
    )


@pytest.fixture(scope="module")
def million():
    root = wide_tree(1000)  # 1,001,001 modules
    yield root
    del root
    gc.collect()


def test_million_modules_are_walked_in_flat_memory(million):
    count = 1000 * 1000 + 1000 + 1
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        walked = sum(1 for _ in pyparams.modules(million, remove_duplicate=False))
        _, peak_no_memo = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        walked_memo = sum(1 for _ in pyparams.modules(million))
        after, peak_memo = tracemalloc.get_traced_memory()
        assert pyparams.parameter_list(million) == []
    finally:
        tracemalloc.stop()
    rss_after = psutil.Process().memory_info().rss
    peak_torch = _traced_peak(lambda: sum(1 for _ in torch_iterator("modules", million)))
    assert walked == walked_memo == count
    # Without a memo the walk holds one frame per level: nothing grows with the size.
    assert peak_no_memo - base < 64 * 1024, peak_no_memo - base
    # The memo (torch's set) is an 8-byte pointer table more than a third full
    # (2^21 slots here), doubled in its own block: < 20 bytes per module, all
    # returned at the end. A table rehashed into a second block would peak at
    # both, 24 bytes a module here.
    assert peak_memo - base < 20 * count, peak_memo - base
    # The design's bound on a million flat modules: at most half of torch's peak.
    assert peak_memo - base <= peak_torch / 2, (peak_memo - base, peak_torch)
    assert after - base < 64 * 1024, after - base
    if not SANITIZED:  # ASan's quarantine holds freed memory
        assert rss_after - rss_before < 64 * 1024 * 1024, rss_after - rss_before
    print(
        f"\n1M modules: peak without memo {(peak_no_memo - base) / 1024:.1f} KiB, "
        f"with memo {(peak_memo - base) / 2**20:.1f} MiB "
        f"(torch {peak_torch / 2**20:.1f} MiB), "
        f"RSS delta {(rss_after - rss_before) / 2**20:.1f} MiB"
    )


def test_million_modules_match_torch(million):
    ours = pyparams.modules(million)
    theirs = torch_iterator("modules", million)
    assert all(a is b for a, b in zip(ours, theirs, strict=True))


# Sizes on both sides of each of the memo's growths (at 3/4 of 16, 32, ... slots):
# rehashed into a new block up to 2^18 slots, and from 2^19 slots (4 MiB) on, grown in
# place, the entries moved within the doubled block.
_GROWTH_EDGES = sorted({n + d for k in range(4, 18) for n in [3 << (k - 2)] for d in (-1, 0, 1)})
_IN_PLACE_GROWTHS = [3 << 17, (3 << 17) + 1, (3 << 18) + 1]


@pytest.mark.parametrize("distinct", _GROWTH_EDGES + _IN_PLACE_GROWTHS)
def test_the_memo_keeps_every_member_through_its_growths(distinct):
    # Every member comes twice, the second time after the memo has grown past
    # all of them: one lost, or moved off its probe run, is yielded twice.
    import torch
    from torch import nn

    leaves = [Leaf.__new__(Leaf) for _ in range(distinct)]
    keys = [str(i) for i in range(distinct)]
    members = dict(zip(keys, leaves, strict=True))
    twice = Node({"a": Node(dict(members)), "b": Node(dict(members))})
    for function in ("modules", "named_modules"):
        ours = list(getattr(pyparams, function)(twice))
        theirs = reference(function, twice)
        assert len(ours) == distinct + 3
        assert_same_items(ours, theirs, function)

    if distinct > 1 << 17:
        return  # (the parameters' memo is the same table; a million tensors is not cheap)
    holder = nn.Module()
    parameters = [nn.Parameter(torch.empty(0)) for _ in range(distinct)]
    for name, parameter in zip(keys, parameters, strict=True):
        holder._parameters[name] = parameter
    again = nn.Module()
    again._parameters.update(holder._parameters)
    tied = nn.Sequential(holder, again)
    ours = pyparams.parameter_list(tied)
    assert len(ours) == distinct
    assert_same_items(ours, reference("parameters", tied), "parameter_list")


def test_deep_chain_beyond_torchs_recursion_limit():
    root = chain(100_000)
    assert sum(1 for _ in pyparams.modules(root, remove_duplicate=False)) == 100_001
    # Names grow with depth (quadratic bytes in total), so name a shallower part.
    names = [name for name, _ in pyparams.named_modules(chain(5000))]
    assert names[-1] == ".".join(["c"] * 5000)
    with pytest.raises(RecursionError):
        reference("modules", root)


def _interrupt_after(seconds: float) -> subprocess.Popen:
    """Sends SIGINT from another process: no GIL needed, so it lands mid-walk."""
    return subprocess.Popen(["sh", "-c", f"sleep {seconds}; kill -INT {os.getpid()}"])


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="SIGINT is not Python's default handler here",
)
def test_ctrl_c_interrupts_an_endless_eager_walk():
    # 1000**3 paths with remove_duplicate=False: hours of walking, never a cycle.
    dag = shared_dag(1000, 3)
    sender = _interrupt_after(0.3)
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            pyparams.parameter_list(dag, remove_duplicate=False)
    finally:
        sender.wait()
    assert time.perf_counter() - start < 10


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="SIGINT is not Python's default handler here",
)
def test_ctrl_c_interrupts_the_million_module_walk(million):
    sender = _interrupt_after(0.2)
    deadline = time.perf_counter() + 20
    inside = False
    try:
        while time.perf_counter() < deadline:
            pyparams.parameter_list(million, remove_duplicate=False)
    except KeyboardInterrupt as interrupt:
        frame = interrupt.__traceback__
        while frame.tb_next is not None:
            frame = frame.tb_next
        inside = frame.tb_frame.f_code.co_name == "parameter_list"
    finally:
        sender.wait()
    assert inside, "KeyboardInterrupt was not raised from inside the native walk"


def test_signal_handler_that_mutates_the_tree_mid_walk():
    # A handler runs inside the walk (at its periodic signal check) and drops the
    # last reference to every child, including the one being entered. torch
    # raises "dictionary changed size during iteration"; so must pyparams.
    result = run_script(
        """
        import signal
        root = wide_tree(1)
        root.__dict__["_modules"] = {str(i): Leaf.__new__(Leaf) for i in range(300_000)}
        fired = []
        def handler(signum, frame):
            fired.append(signum)
            root._modules.clear()
        signal.signal(signal.SIGALRM, handler)
        for dedup in (False, True):
            fired.clear()
            root._modules.update({str(i): Leaf.__new__(Leaf) for i in range(300_000)})
            signal.setitimer(signal.ITIMER_REAL, 0.005)
            outcome = None
            for _ in range(2000):
                try:
                    pyparams.parameter_list(root, remove_duplicate=dedup)
                except RuntimeError as error:
                    outcome = str(error)
                    break
                if fired:
                    root._modules.update({str(i): Leaf.__new__(Leaf) for i in range(300_000)})
                    fired.clear()
                    signal.setitimer(signal.ITIMER_REAL, 0.005)
            print(dedup, outcome)
        """,
        PYTHONMALLOC="malloc" if SANITIZED else "debug",
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "False dictionary changed size during iteration" in result.stdout, result.stdout
    assert "True dictionary changed size during iteration" in result.stdout, result.stdout


@pytest.mark.skipif(SANITIZED, reason="ASan reserves terabytes of shadow: RLIMIT_AS cannot apply")
def test_allocation_failure_surfaces_as_memory_error():
    result = run_script(
        """
        import gc, resource
        flat = wide_tree(1000)        # 1M modules: the memo needs a 16 MiB table
        deep = chain(300_000)         # 300k frames: the walk's stack needs ~20 MiB
        gc.collect()

        def vm_size():
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmSize:"):
                        return int(line.split()[1]) * 1024

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        outcomes = []
        for name, thunk in (
            ("memo", lambda: pyparams.parameter_list(flat)),
            ("stack", lambda: pyparams.parameter_list(deep, remove_duplicate=False)),
            ("lazy", lambda: sum(1 for _ in pyparams.named_modules(deep, remove_duplicate=False))),
        ):
            resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 4 * 2**20, hard))
            try:
                thunk()
                outcomes.append(f"{name}:no-error")
            except MemoryError:
                outcomes.append(f"{name}:MemoryError")
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        # The walker is unharmed: the same walks succeed with memory available.
        assert pyparams.parameter_list(flat) == []
        assert sum(1 for _ in pyparams.modules(deep, remove_duplicate=False)) == 300_001
        print(" ".join(outcomes))
        """
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "memo:MemoryError" in result.stdout, result.stdout
    assert "stack:MemoryError" in result.stdout, result.stdout
    assert "lazy:MemoryError" in result.stdout, result.stdout


def _traced_peak(walk) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        walk()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def test_a_first_walk_builds_no_instance_dicts() -> None:
    # Fresh modules keep their attributes inline (no instance __dict__ yet, on
    # CPython 3.11 on): reading them through a __dict__ would build one per module,
    # 64 bytes and more each, more than torch's whole walk costs. What remains is
    # the memo (see above: < 40 bytes a module). The walker finds "no dict yet" at
    # the managed dict's slot, which free-threaded builds keep elsewhere (one word
    # before the object, not three): read at the wrong place, it builds them all.
    from torch import nn

    def fresh() -> nn.Module:
        layers = nn.ModuleList(nn.Identity() for _ in range(50_000))
        layers.append(nn.Linear(2, 2))
        return layers

    theirs, ours = fresh(), fresh()
    torch_walk = _traced_peak(lambda: sum(1 for _ in theirs.parameters()))
    ours_walk = _traced_peak(lambda: sum(1 for _ in pyparams.parameters(ours)))
    assert ours_walk < 40 * len(ours), ours_walk
    assert ours_walk < torch_walk, (ours_walk, torch_walk)
