// Small pieces of Python's calling protocol the walker repeats in C++.
#pragma once

#include <Python.h>

#include "support/owned_ref.h"

namespace pyparams {

// Python's `first, second = item`, with its error messages. False with an error set.
bool unpack_pair(PyObject* item, OwnedRef& first, OwnedRef& second);

// kwargs[name] = value for a keyword torch passes. False with an error set.
inline bool set_keyword(PyObject* kwargs, const char* name, PyObject* value) {
  return PyDict_SetItemString(kwargs, name, value) == 0;
}

// What a weakref.proxy stands for, as a new reference; nullptr with
// ReferenceError set, as Python's own use of a dead proxy raises.
OwnedRef proxy_referent(PyObject* proxy);

// PEP 479, as a generator's frame applies it: a StopIteration set becomes
// RuntimeError("generator raised StopIteration"), caused by it. Any other
// error, or none, is left as it is.
void stop_iteration_to_runtime_error();

// Py_True or Py_False, borrowed.
inline PyObject* as_bool(bool value) {
  return value ? Py_True : Py_False;
}

}  // namespace pyparams
