// The eager walk: every item of a Walker, gathered into a list in one call.
#pragma once

#include <Python.h>

#include "walker/walker.h"

namespace pyparams {

// A new list of what a lazy walk of `root` (borrowed) would yield, or nullptr
// with an error set. No iterator object and no per-item call overhead.
PyObject* collect_list(PyObject* root, const WalkOptions& options);

}  // namespace pyparams
