// torch's memo `set()` where what it holds hashes by code of its own.
#pragma once

#include <Python.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "support/pymem_allocator.h"

namespace pyparams {

// What a Python set answers for `x in memo` and `memo.add(x)`, each object
// kept under the hash it had when added (as a set keeps it: a class that
// changes its hash later does not move it). A lookup runs `entry == x` on the
// entries added under the same hash that are not `x`, in the order they were
// added, with the entry on the left, as a set's probe runs it. The memo is the
// walk's own (torch's generators keep theirs in a local), so no code it runs
// can change it. Holds a reference to each object.
class HashMemo {
 public:
  HashMemo() = default;
  HashMemo(const HashMemo&) = delete;
  HashMemo& operator=(const HashMemo&) = delete;
  ~HashMemo() { clear(); }

  // 1 when `object`, or an entry `==` to it, was added under `hash`; 0 when
  // none was; -1 with an error set (an `==` or its truth raised).
  int contains(PyObject* object, Py_hash_t hash);
  // Adds `object` under `hash`. Throws std::bad_alloc.
  void add(PyObject* object, Py_hash_t hash);

  // Calls `visit(object, arg)` for each object, in the order they were added;
  // stops at the first nonzero result.
  int traverse(visitproc visit, void* arg) const;
  // Empties the memo, then drops its references (which may run code).
  void clear() noexcept;

 private:
  std::vector<PyObject*, PyMemAllocator<PyObject*>> added_;  // in order; owns the references
  // Hash -> indices into added_, in order.
  std::unordered_multimap<Py_hash_t, std::size_t, std::hash<Py_hash_t>, std::equal_to<Py_hash_t>,
                          PyMemAllocator<std::pair<const Py_hash_t, std::size_t>>>
      by_hash_;
};

// hash(object) as a set's `in` and `add` take it: -1 with the error a set
// raises (from 3.14 on, a TypeError of the hash's own, say "unhashable type",
// becomes the set's "cannot use 'T' as a set element (...)").
Py_hash_t hash_for_set(PyObject* object);

// The hash torch.Tensor.__hash__ gives, for a tensor proven to keep it
// (memo_hash.h): `id(self)`, which CPython's slot keeps as it is when it fits
// a Py_hash_t (any user-space address does). Computed: no call, no int made.
inline Py_hash_t tensor_identity_hash(PyObject* tensor) {
  auto hash = static_cast<Py_hash_t>(reinterpret_cast<std::uintptr_t>(tensor));
  return hash == -1 ? -2 : hash;  // (-1 means an error: CPython's slot turns it into -2)
}

// object's hash (a rotated address), for a module whose class keeps it: no code.
inline Py_hash_t object_identity_hash(PyObject* module) {
  return PyBaseObject_Type.tp_hash(module);
}

}  // namespace pyparams
