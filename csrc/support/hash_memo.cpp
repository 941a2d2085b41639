#include "support/hash_memo.h"

#include <algorithm>
#include <utility>

#include "support/owned_ref.h"

namespace pyparams {

Py_hash_t hash_for_set(PyObject* object) {
  Py_hash_t hash = PyObject_Hash(object);
#if PY_VERSION_HEX >= 0x030E0000
  if (hash == -1) {
    // CPython 3.14's set_unhashable_type: an exact TypeError only.
    PyObject* error = PyErr_GetRaisedException();
    if (Py_IS_TYPE(error, reinterpret_cast<PyTypeObject*>(PyExc_TypeError))) {
      PyErr_Format(PyExc_TypeError, "cannot use '%T' as a set element (%S)", object, error);
      Py_DECREF(error);
    } else {
      PyErr_SetRaisedException(error);
    }
  }
#endif
  return hash;
}

int HashMemo::contains(PyObject* object, Py_hash_t hash) {
  // The indices first, in the order added (a set's probe meets entries of
  // one hash in that order): an `==` runs code, and no iterator of ours is
  // held across it.
  auto [first, last] = by_hash_.equal_range(hash);
  std::vector<std::size_t, PyMemAllocator<std::size_t>> candidates;
  for (auto it = first; it != last; ++it) {
    candidates.push_back(it->second);
  }
  std::sort(candidates.begin(), candidates.end());
  for (std::size_t index : candidates) {
    PyObject* entry = added_[index];
    if (entry == object) {
      return 1;
    }
    OwnedRef held = OwnedRef::borrow(entry);
    OwnedRef equal = OwnedRef::steal(PyObject_RichCompare(held.get(), object, Py_EQ));
    if (!equal) {
      return -1;
    }
    int truth = PyObject_IsTrue(equal.get());
    if (truth != 0) {
      return truth;  // 1, or -1 with the error of its __bool__
    }
  }
  return 0;
}

void HashMemo::add(PyObject* object, Py_hash_t hash) {
  if (added_.size() == added_.capacity()) {  // (throws before anything changed)
    added_.reserve(added_.empty() ? 16 : 2 * added_.size());
  }
  by_hash_.emplace(hash, added_.size());
  Py_INCREF(object);
  added_.push_back(object);
}

int HashMemo::traverse(visitproc visit, void* arg) const {
  for (PyObject* object : added_) {
    Py_VISIT(object);
  }
  return 0;
}

void HashMemo::clear() noexcept {
  by_hash_.clear();
  auto added = std::move(added_);
  added_.clear();
  for (PyObject* object : added) {
    Py_DECREF(object);
  }
}

}  // namespace pyparams
