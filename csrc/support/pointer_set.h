// Identity set of Python objects, on the project's one open-addressing table.
#pragma once

#include <Python.h>

#include <cstdint>

#include "support/address_table.h"

namespace pyparams {

// What torch's memo `set()` does for modules and tensors, whose hash is their
// id: 8 bytes a slot, about a third of what a Python set spends per member.
// With `Ownership::Strong` the set holds a reference to every member, as
// torch's memo does: a member freed mid-walk can then never have its address
// reused by a new object that would be mistaken for a duplicate.
class PointerSet {
 public:
  enum class Ownership : std::uint8_t { Strong, Borrowed };

  explicit PointerSet(Ownership ownership) noexcept : ownership_(ownership) {}
  PointerSet(const PointerSet&) = delete;
  PointerSet& operator=(const PointerSet&) = delete;
  ~PointerSet() { clear(); }

  // 1 if `object` was added, 0 if it was already present, -1 with
  // MemoryError set when the table could not grow.
  int insert(PyObject* object) {
    bool added = false;
    if (table_.insert(object, added) == nullptr) {
      PyErr_NoMemory();
      return -1;
    }
    if (added && ownership_ == Ownership::Strong) {
      Py_INCREF(object);
    }
    return added ? 1 : 0;
  }

  bool contains(PyObject* object) const noexcept { return table_.contains(object); }

  // Removes `object` if present (used for borrowed sets only).
  void erase(PyObject* object) noexcept {
    if (table_.erase(object) && ownership_ == Ownership::Strong) {
      Py_DECREF(object);
    }
  }

  // Drops every member (and its reference, when strong) and frees the table;
  // the set is empty before any reference drops (which may run code).
  void clear() noexcept {
    bool strong = ownership_ == Ownership::Strong;
    table_.drain([strong](const void* member, NoValue) {
      if (strong) {
        Py_DECREF(static_cast<PyObject*>(const_cast<void*>(member)));
      }
    });
  }

  // Calls `visit(member)` for each member (no order). `visit` must leave the set as it is.
  template <typename Visit>
  void for_each_member(Visit visit) const {
    table_.for_each([&visit](const void* member, NoValue) {
      visit(static_cast<PyObject*>(const_cast<void*>(member)));
      return 0;
    });
  }

  // Calls `visit(member, arg)` for each member; stops at the first nonzero result.
  int traverse(visitproc visit, void* arg) const {
    if (ownership_ != Ownership::Strong) {
      return 0;
    }
    return table_.for_each([visit, arg](const void* member, NoValue) {
      return visit(static_cast<PyObject*>(const_cast<void*>(member)), arg);
    });
  }

 private:
  [[no_unique_address]] AddressTable<NoValue> table_;  // ownership_ fits in its padding
  Ownership ownership_;
};

}  // namespace pyparams
