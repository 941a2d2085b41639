// One position in a module's `_parameters` / `_buffers` / `_modules` mapping.
#pragma once

#include <Python.h>

#include "support/owned_ref.h"

namespace pyparams {

// Walks the (key, value) items of one mapping with Python's own rules for
// iterating a dict: a dict whose size changes raises "dictionary changed size
// during iteration", one whose keys were swapped at equal size raises
// "dictionary keys changed during iteration". Exact dicts are read in place
// (PyDict_Next); any other mapping goes through its `items()`, as torch does.
class ItemCursor {
 public:
  // Starts over `mapping` (borrowed). Returns false with an error set.
  bool start(PyObject* mapping);
  // Starts over an iterable of (key, value) pairs (borrowed).
  bool start_pairs(PyObject* pairs);

  // 1 with `key` and `value` set to borrowed references, valid until the
  // cursor moves or Python code runs (take a reference to keep one longer);
  // 0 at the end; -1 with an error set.
  int next(PyObject*& key, PyObject*& value) {
    if (dict_) [[likely]] {
      PyObject* dict = dict_.get();
      if (PyDict_GET_SIZE(dict) != expected_size_) [[unlikely]] {
        return size_changed();
      }
      if (!PyDict_Next(dict, &position_, &key, &value)) {
        dict_.reset();
        return 0;
      }
      if (remaining_-- == 0) [[unlikely]] {
        return keys_changed();
      }
      return 1;
    }
    return iterator_ ? next_from_iterator(key, value) : 0;
  }

  // For a dict cursor: where PyDict_Next stands (to record it), and a jump
  // to a recorded position with `remaining` entries left, as if the cursor
  // had walked there itself.
  Py_ssize_t position() const noexcept { return position_; }
  // Starts over the exact dict `dict` (borrowed) as a cursor that began when
  // it had `expected_size` entries and has read up to `position`, with
  // `remaining` entries left: the state a live walk has there.
  void start_at(PyObject* dict, Py_ssize_t expected_size, Py_ssize_t position,
                Py_ssize_t remaining) noexcept {
    reset();
    if (expected_size != 0) {
      dict_ = OwnedRef::borrow(dict);
      expected_size_ = expected_size;
      position_ = position;
      remaining_ = remaining;
    }
  }

  void reset() noexcept;
  int traverse(visitproc visit, void* arg) const;

 private:
  int next_from_iterator(PyObject*& key, PyObject*& value);
  static int size_changed();
  static int keys_changed();

  OwnedRef dict_;      // set while walking an exact dict
  OwnedRef iterator_;  // set while walking anything else
  OwnedRef pair_;      // the iterator's current (key, value) item
  Py_ssize_t position_ = 0;
  Py_ssize_t expected_size_ = 0;
  Py_ssize_t remaining_ = 0;
};

}  // namespace pyparams
