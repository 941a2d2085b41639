"""Break each soundness check of the walker once, and watch the suites fail.

    python tools/mutation_check.py [--python python3.12 --venv .venv-3.12]
                                   [--wrap "bash tools/debian_root.sh 3.14 --"] [NAME ...]

For every mutant below (all of them, or the NAMEs given): the one C++ edit is made, the
extension rebuilt (``make install PYTHON=... VENV=...``), and the soundness suites (or the
mutant's own, for zero_grad) run with ``-x``; the source is restored whatever happens, and
the extension rebuilt from it at the end. A mutant the suites do not fail "survived": the
check it removes is guarded by no test. Mutants that only a newer CPython can catch (the
3.12+ dict watcher, the 3.13+ version-tag budget) are skipped on older ones. Exit status 1
when any survived.

Not in CI (one to five minutes a mutant on 2 cores; a survivor runs every suite). Edits
that left every suite passing because they change nothing observable (a second guard
behind a first), or that only the sanitizer suite sees (a read of freed memory that still
holds what it held), are listed in docs/reliability.md, with the reason.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITES = (
    "tests/test_walk_cache.py",
    "tests/test_hostile.py",
    "tests/test_safety.py",
    "tests/test_odd_modules.py",
    "tests/test_overrides.py",
    "tests/test_fuzz_hostile.py",
    "tests/test_fuzz_state_machine.py",
    "tests/test_conformance.py",
    "tests/test_delegated_iterators.py",
    "tests/test_memo_hashes.py",
)
ZERO_GRAD_SUITES = ("tests/test_zero_grad.py", "tests/test_patch.py")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    since: tuple[int, int] = (3, 10)  # the first CPython whose tests can catch it
    suites: tuple[str, ...] = SUITES  # what is run against it


MUTANTS = (
    Mutant(
        "revalidate-keys-any-type",  # a written __dict__ re-read though a key may run code
        "csrc/walker/replay.cpp",
        "if (version == 0 || !keys_are_exact_str(dict)) {",
        "if (version == 0) {",
    ),
    Mutant(
        "revalidate-ignores-root-overrides",
        "csrc/walker/replay.cpp",
        "if ((root || asked == Method::NamedModules) &&",
        "if ((false) &&",
    ),
    Mutant(
        "duplicate-override-unchecked",
        "csrc/walker/replay.cpp",
        "        if (!override_ruled_out_without_code(child, Method::NamedModules)) {\n"
        "          break;\n        }\n        continue;",
        "        continue;",
    ),
    Mutant(
        "signal-handler-trusted",  # an eager replay keeps its stamp across a handler
        "csrc/walker/replay.cpp",
        "    all_proven = unchanged_since(proven_at);  // and then the batch goes on as a new one",
        "",
        since=(3, 12),
    ),
    Mutant(
        "dict-pointer-unchecked",  # a replaced __dict__ taken for the recorded one
        "csrc/cache/walk_cache.h",
        "  if (*reinterpret_cast<PyObject**>(reinterpret_cast<char*>(module) + "
        "recorded.dict_offset) !=\n      dict) {",
        "  if (false) {",
    ),
    Mutant(
        "class-version-unchecked",
        "csrc/cache/walk_cache.h",
        "if (Py_TYPE(module) != type || !type_version_is(type, recorded.type_version)) {",
        "if (Py_TYPE(module) != type) {",
    ),
    Mutant(
        "records-any-key",  # a __dict__ whose lookups run code recorded
        "csrc/walker/recording.cpp",
        "  if (dict == nullptr || *dict == nullptr || !PyDict_CheckExact(*dict) ||\n"
        "      !keys_are_exact_str(*dict)) {",
        "  if (dict == nullptr || *dict == nullptr || !PyDict_CheckExact(*dict)) {",
    ),
    Mutant(
        "records-tagless-class",  # a class with no version tag (0 proves nothing)
        "csrc/walker/recording.cpp",
        "  if (type_version(type) == 0 || !module_class_info(type).plain_attributes) {",
        "  if (!module_class_info(type).plain_attributes) {",
        since=(3, 13),
    ),
    Mutant(
        "records-str-subclass-member-key",
        "csrc/walker/live_walk.cpp",
        "      if (!PyUnicode_CheckExact(key)) [[unlikely]] {\n        abandon_recording();",
        "      if (false) {\n        abandon_recording();",
    ),
    Mutant(
        "records-str-subclass-child-key",
        "csrc/walker/live_walk.cpp",
        "if (recorder_.record && (!PyUnicode_CheckExact(key.get()) || "
        "!record_enter(child.get()))) {",
        "if (recorder_.record && (!record_enter(child.get()))) {",
    ),
    Mutant(
        "records-str-subclass-prefix",
        "csrc/walker/recording.cpp",
        "if (!cache_enabled() || (options_.named && !PyUnicode_CheckExact(root_name_.get()))) {",
        "if (!cache_enabled()) {",
    ),
    Mutant(
        "handover-reads-freed-key",  # the model's key, though its dict may have let it go
        "csrc/walker/handover.cpp",
        "  return current_version(parent.children) == parent.children_version\n"
        "      ? record.children[static_cast<std::size_t>(frame.entry)].key\n"
        "      : record.key_copies[frame.record];",
        "  return record.children[static_cast<std::size_t>(frame.entry)].key;",
    ),
    Mutant(
        "handover-forgets-seen-modules",
        "csrc/walker/handover.cpp",
        "(PinBuffer::tag(pinned) == PinBuffer::kModule ? live_.seen_modules : live_.seen_members)",
        "(live_.seen_members)",
    ),
    Mutant(
        "handover-miscounts-entries-left",
        "csrc/walker/handover.cpp",
        "                                module.child_count - replayed.read);",
        "                                module.child_count);",
    ),
    Mutant(
        "keys-changed-unchecked",  # one entry more than the dict started with
        "csrc/support/item_cursor.h",
        "if (remaining_-- == 0) [[unlikely]] {",
        "if (false) {",
    ),
    Mutant(
        "size-changed-unchecked",  # a dict that grew or shrank read on
        "csrc/support/item_cursor.h",
        "if (PyDict_GET_SIZE(dict) != expected_size_) [[unlikely]] {",
        "if (false) {",
    ),
    Mutant(
        "iterator-reentered",  # next() from inside a step (a requires_grad property)
        "csrc/module/iterator.cpp",
        "  iterator->running = true;\n  if (iterator->steps < 2)",
        "  if (iterator->steps < 2)",
    ),
    Mutant(
        "pair-refilled-while-shared",  # a pair the consumer kept changed under it
        "csrc/walker/walker.h",
        "if (pair != nullptr && Py_REFCNT(pair) == 1) [[likely]] {",
        "if (pair != nullptr) [[likely]] {",
    ),
    Mutant(
        "requires-grad-native-under-mode",  # a torch function mode not asked
        "csrc/walker/tensor_flags.cpp",
        "if (reads_natively(Py_TYPE(value)) && !at::impl::torch_function_mode_enabled()) "
        "[[likely]] {",
        "if (reads_natively(Py_TYPE(value))) [[likely]] {",
    ),
    Mutant(
        "requires-grad-native-for-torch-function-subclass",
        "csrc/walker/tensor_flags.cpp",
        "      !overrides_torch_function(type) &&\n",
        "",
    ),
    Mutant(
        "stop-iteration-from-user-code-ends-the-walk",  # PEP 479 not applied to next()
        "csrc/module/iterator.cpp",
        "    stop_iteration_to_runtime_error();\n  }\n  return item;",
        "  }\n  return item;",
    ),
    Mutant(
        "yield-from-not-forwarded",  # throw()/send()/close() skip an override's iterator
        "csrc/walker/walker.h",
        "    return all_yield_from ? closed_with_walk() : nullptr;",
        "    return nullptr;",
    ),
    Mutant(
        "delegated-iterator-not-closed-with-the-walk",  # freed or closed: no close() on it
        "csrc/walker/walker.h",
        "    return live_.stack.back().overridden.get();\n  }",
        "    return nullptr;\n  }",
    ),
    Mutant(
        "delegated-iterator-not-closed-when-the-walk-fails",  # an error above its `yield from`
        "csrc/walker/live_walk.cpp",
        "  if (!std::exchange(delegated_raised_, false)) {\n    close_delegated_unraisable();\n  }",
        "  delegated_raised_ = false;",
    ),
    Mutant(
        "delegating-generator-not-dropped",  # a `throw` look-up that raised, below the root
        "csrc/walker/yield_from.cpp",
        "    pop();\n    if (live_.stack.size() > 1) {\n      pop();\n    }\n",
        "",
    ),
    Mutant(
        "requires-grad-native-for-own-getattribute",
        "csrc/walker/tensor_flags.cpp",
        "      type->tp_getattro == "
        "reinterpret_cast<PyTypeObject*>(THPVariableClass)->tp_getattro &&\n",
        "",
    ),
    Mutant(
        "requires-grad-native-for-redefined-attribute",
        "csrc/walker/tensor_flags.cpp",
        "      _PyType_Lookup(type, names().requires_grad) == g_requires_grad_descriptor;",
        "      true;",
    ),
    Mutant(
        "live-module-signals-unchecked",  # Ctrl-C not seen while entering modules
        "csrc/walker/live_walk.cpp",
        "    if (!poll_signals()) {\n      return -1;\n    }\n    ModuleFrame& top",
        "    ModuleFrame& top",
    ),
    Mutant(
        "live-member-signals-unchecked",  # Ctrl-C not seen while reading members
        "csrc/walker/live_walk.cpp",
        "    if (!poll_signals()) {\n      return -1;\n    }\n"
        "    PyObject* key;\n    PyObject* value;",
        "    PyObject* key;\n    PyObject* value;",
    ),
    Mutant(
        "override-lookup-error-ignored",  # a raising lookup of named_modules walked past
        "csrc/walker/live_walk.cpp",
        "  if (PyErr_Occurred()) {\n    return -1;\n  }\n  if (live_.memo)",
        "  if (live_.memo)",
    ),
    Mutant(
        "cycle-guard-keeps-left-frames",  # a module met twice on different branches
        "csrc/walker/live_walk.cpp",
        "    live_.on_stack.erase(done.module.get());",
        "",
    ),
    Mutant(
        "class-info-ignores-version",  # a class changed since it was inspected
        "csrc/walker/module_attributes.cpp",
        "if (cached.type == type && version != 0 && cached.version == version) [[likely]] {",
        "if (cached.type == type) [[likely]] {",
    ),
    Mutant(
        "custom-getattribute-ignored",
        "csrc/walker/module_attributes.cpp",
        "  return _PyType_Lookup(type, names().getattribute) == g_object_getattribute;",
        "  return true;",
    ),
    Mutant(
        "exact-str-keys-unread",  # every dict's keys taken for exact str
        "csrc/walker/module_attributes.cpp",
        "    if (!PyUnicode_CheckExact(key)) {\n      return false;\n    }\n  }\n  return true;",
        "  }\n  return true;",
    ),
    Mutant(
        "instance-override-ignored",  # `module.named_modules = ...` on an instance
        "csrc/walker/dispatch.cpp",
        "    bool found = false;\n    return held_dict_lookup(*dict, name, found);",
        "    return nullptr;",
    ),
    Mutant(
        "ruled-out-through-any-keys",  # a __dict__ whose lookup runs code taken as codeless
        "csrc/walker/dispatch.cpp",
        "  return PyDict_CheckExact(*dict) && keys_are_exact_str(*dict) &&",
        "  return PyDict_CheckExact(*dict) &&",
    ),
    Mutant(
        "watcher-keeps-freed-dicts",  # a new dict at a freed one's address inherits its version
        "csrc/cache/dict_versions.cpp",
        "    g_followed->erase(dict);  // a new dict at this address starts unfollowed: no version",
        "",
        since=(3, 12),
    ),
    Mutant(
        "watcher-versions-frozen",
        "csrc/cache/dict_versions.cpp",
        "    *version = ++g_last_version;\n  }\n  return 0;",
        "  }\n  return 0;",
        since=(3, 12),
    ),
    Mutant(
        "watcher-stamp-frozen",
        "csrc/cache/dict_versions.cpp",
        "  ++detail::g_dict_changes;\n  if (event == PyDict_EVENT_DEALLOCATED) {",
        "  if (event == PyDict_EVENT_DEALLOCATED) {",
        since=(3, 12),
    ),
    Mutant(
        "cache-clear-keeps-stamp",  # unwatched dicts still vouched for by the old stamp
        "csrc/cache/dict_versions.cpp",
        "  ++detail::g_dict_changes;  // nothing proven before holds: no dict is followed now",
        "",
        since=(3, 12),
    ),
    Mutant(
        "zero-grad-native-under-mode",
        "csrc/module/zero_grad.cpp",
        "if (THPVariable_CheckExact(p) && !at::impl::torch_function_mode_enabled()) [[likely]] {",
        "if (THPVariable_CheckExact(p)) [[likely]] {",
        suites=ZERO_GRAD_SUITES,
    ),
    Mutant(
        "zero-grad-native-for-non-leaf",  # torch's getter warns on a non-leaf's .grad
        "csrc/module/zero_grad.cpp",
        "    if (var.is_leaf() || var.retains_grad()) [[likely]] {",
        "    if (true) [[likely]] {",
        suites=ZERO_GRAD_SUITES,
    ),
    Mutant(
        "module-hash-taken-for-identity",  # a module class's own __hash__ never run
        "csrc/walker/memo_hash.h",
        "  return Py_TYPE(module)->tp_hash == PyBaseObject_Type.tp_hash;",
        "  return true;",
    ),
    Mutant(
        "member-hash-taken-for-identity",  # a parameter class's own __hash__ never run
        "csrc/walker/memo_hash.cpp",
        "  if (_PyType_Lookup(type, names().hash) != g_tensor_hash ||",
        "  if (false ||",
    ),
    Mutant(
        "replayed-yield-not-hash-checked",  # a member's class swapped between replay steps
        "csrc/walker/replay.cpp",
        "if (yields && hash_checks(record.members[entry].value)) [[likely]] {",
        "if (yields) [[likely]] {",
    ),
    Mutant(
        "skipped-duplicate-member-not-hash-checked",  # a tied parameter's class swapped
        "csrc/walker/replay.cpp",
        "        if (hash_checks(record.members[op->entry].value)) [[likely]] {",
        "        if (true) {",
    ),
    Mutant(
        "identity-entries-rehashed",  # torch's set keeps each under the hash it went in with
        "csrc/walker/live_walk.cpp",
        "target->add(seen_object, identity_hash(seen_object));",
        "target->add(seen_object, PyObject_Hash(seen_object));",
    ),
)


def _run(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, shell=True, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--python", default="python3", help="make's PYTHON")
    parser.add_argument("--venv", default=".venv", help="make's VENV")
    parser.add_argument("--wrap", default="", help="a prefix for make and pytest")
    args = parser.parse_args()
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"no such mutant: {', '.join(sorted(unknown))}")
    make = f"{args.wrap} make install PYTHON={args.python} VENV={args.venv}".strip()
    python = f"{args.wrap} {args.venv}/bin/python".strip()
    found = _run(f"{python} -c 'import sys; print(*sys.version_info[:2])'", 600)
    version = tuple(int(part) for part in found.stdout.split()[-2:])
    pytest = f"{python} -m pytest -q -x -p no:cacheprovider -n 2"
    survived = []
    try:
        for mutant in MUTANTS:
            if args.names and mutant.name not in args.names:
                continue
            if version < mutant.since:
                print(f"{mutant.name}: skipped (CPython {'.'.join(map(str, mutant.since))}+)")
                continue
            path = REPO / mutant.path
            source = path.read_text()
            if source.count(mutant.old) != 1:
                print(f"{mutant.name}: its code is gone from {mutant.path}; update the mutant")
                survived.append(mutant.name)
                continue
            start = time.perf_counter()
            try:
                path.write_text(source.replace(mutant.old, mutant.new))
                built = _run(make, 1800)
                if built.returncode != 0:
                    print(
                        f"{mutant.name}: build failed\n{built.stdout[-2000:]}{built.stderr[-2000:]}"
                    )
                    survived.append(mutant.name)
                    continue
                tested = _run(f"{pytest} {' '.join(mutant.suites)}", 3600)
            finally:
                path.write_text(source)
            lines = tested.stdout.strip().splitlines()
            first_failure = next((line for line in lines if line.startswith("FAILED")), "")
            verdict = "failed the suites" if tested.returncode != 0 else "SURVIVED"
            print(f"{mutant.name}: {verdict} ({time.perf_counter() - start:.0f} s) {first_failure}")
            if tested.returncode == 0:
                survived.append(mutant.name)
    finally:
        rebuilt = _run(make, 1800)
        print(
            "extension rebuilt from the restored source"
            if rebuilt.returncode == 0
            else f"REBUILD FAILED: run `{make}`"
        )
    print(f"{len(survived)} survived: {', '.join(survived)}" if survived else "none survived")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
