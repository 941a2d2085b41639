// pyparams._C.walk and pyparams._C.collect: the per-call entry points, in the
// C API (METH_FASTCALL) because they run once per walk and pybind11's keyword
// matching (a new str per declared argument) cost more than a warm walk.
#pragma once

#include <Python.h>

namespace pyparams {

// Adds walk() and collect() to `module`. False with an error set.
bool add_entry_points(PyObject* module);

}  // namespace pyparams
