// Walks nested through user code count as recursion, as torch's generators do.
#pragma once

#include <Python.h>

namespace pyparams {

// The walks nested in one another through user code on this thread right now.
inline thread_local int g_nested_walks = 0;

// PyIter_Next on an iterator user code supplies (an override's items, a
// mapping's items(), the parameters zero_grad resets), counted as one level
// of recursion: it may be another walk that nests further, where torch's own
// walk nests generator frames. Uncounted, overrides nested some 17,000 deep
// exhausted the C stack where torch raises RecursionError. Two counts: the
// interpreter's (Py_EnterRecursiveCall), and, as torch's nested frames meet
// the Python recursion limit, this thread's nesting against that limit
// (CPython 3.12 and 3.13 check C recursion against a fixed limit that an
// 8 MB stack did not hold under ASan's larger frames).
// nullptr at the end (no error set) or with an error set.
inline PyObject* next_counted(PyObject* iterator) {
  if (g_nested_walks >= Py_GetRecursionLimit()) {
    PyErr_SetString(PyExc_RecursionError,
                    "maximum recursion depth exceeded while walking a module tree");
    return nullptr;
  }
  if (Py_EnterRecursiveCall(" while walking a module tree") != 0) {
    return nullptr;
  }
  ++g_nested_walks;
  PyObject* item = PyIter_Next(iterator);
  --g_nested_walks;
  Py_LeaveRecursiveCall();
  return item;
}

}  // namespace pyparams
