// Module and member names as torch builds them: `prefix + "." + key`.
#pragma once

#include <Python.h>

namespace pyparams {

// torch's `prefix + ("." if prefix else "") + name` for str parts, built in
// one allocation. A new reference, or nullptr with an error set.
PyObject* join_name(PyObject* prefix, PyObject* key);

// The same for a prefix an override yielded, which may be any object:
// torch's own expression, run as is.
PyObject* join_name_generic(PyObject* prefix, PyObject* key);

}  // namespace pyparams
