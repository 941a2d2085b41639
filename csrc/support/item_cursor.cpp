#include "support/item_cursor.h"

#include "support/counted_next.h"
#include "support/python_calls.h"
#include "support/python_names.h"

namespace pyparams {

bool ItemCursor::start(PyObject* mapping) {
  reset();
  if (PyDict_CheckExact(mapping)) [[likely]] {
    // An empty dict ends at once, exactly as iterating it would.
    if (PyDict_GET_SIZE(mapping) != 0) {
      dict_ = OwnedRef::borrow(mapping);
      expected_size_ = PyDict_GET_SIZE(mapping);
      remaining_ = expected_size_;
    }
    return true;
  }
  OwnedRef items = OwnedRef::steal(PyObject_CallMethodNoArgs(mapping, names().items));
  if (!items) {
    return false;
  }
  return start_pairs(items.get());
}

bool ItemCursor::start_pairs(PyObject* pairs) {
  reset();
  iterator_ = OwnedRef::steal(PyObject_GetIter(pairs));
  return static_cast<bool>(iterator_);
}

int ItemCursor::next_from_iterator(PyObject*& key, PyObject*& value) {
  pair_ = OwnedRef::steal(next_counted(iterator_.get()));
  if (!pair_) {
    if (PyErr_Occurred()) {
      return -1;
    }
    iterator_.reset();
    return 0;
  }
  if (!PyTuple_CheckExact(pair_.get()) || PyTuple_GET_SIZE(pair_.get()) != 2) [[unlikely]] {
    // torch's `for k, v in members`: any two-item iterable (a list, a tuple
    // subclass with its own __iter__), unpacked as Python does, errors included.
    OwnedRef first;
    OwnedRef second;
    if (!unpack_pair(pair_.get(), first, second)) {
      return -1;
    }
    pair_ = OwnedRef::steal(PyTuple_Pack(2, first.get(), second.get()));
    if (!pair_) {
      return -1;
    }
  }
  key = PyTuple_GET_ITEM(pair_.get(), 0);
  value = PyTuple_GET_ITEM(pair_.get(), 1);
  return 1;
}

int ItemCursor::size_changed() {
  PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
  return -1;
}

int ItemCursor::keys_changed() {
  PyErr_SetString(PyExc_RuntimeError, "dictionary keys changed during iteration");
  return -1;
}

void ItemCursor::reset() noexcept {
  dict_.reset();
  iterator_.reset();
  pair_.reset();
  position_ = 0;
  expected_size_ = 0;
  remaining_ = 0;
}

int ItemCursor::traverse(visitproc visit, void* arg) const {
  Py_VISIT(dict_.get());
  Py_VISIT(iterator_.get());
  Py_VISIT(pair_.get());
  return 0;
}

}  // namespace pyparams
