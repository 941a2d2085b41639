// Walks nested through user code count as recursion, as torch's generators do.
#pragma once

#include <Python.h>

namespace pyparams {

// PyIter_Next on an iterator user code supplies (an override's items, a
// mapping's items(), the parameters zero_grad resets), counted as one level
// of recursion: it may be another walk that nests further, where torch's own
// walk nests generator frames. Uncounted, overrides nested some 17,000 deep
// exhausted the C stack where torch raises RecursionError.
// nullptr at the end (no error set) or with an error set.
inline PyObject* next_counted(PyObject* iterator) {
  if (Py_EnterRecursiveCall(" while walking a module tree") != 0) {
    return nullptr;
  }
  PyObject* item = PyIter_Next(iterator);
  Py_LeaveRecursiveCall();
  return item;
}

}  // namespace pyparams
