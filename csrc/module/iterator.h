// The CPython iterator type that drives a Walker, one item per tp_iternext.
#pragma once

#include <Python.h>

#include "walker/walker.h"

namespace pyparams {

// Readies the type and adds it to `module` as WalkIterator. False with an error set.
bool add_walk_iterator_type(PyObject* module);

// A new lazy iterator over `root` (borrowed), or nullptr with an error set.
PyObject* new_walk_iterator(PyObject* root, PyObject* prefix, const WalkOptions& options);

}  // namespace pyparams
