// Reading a module's `_parameters` / `_buffers` / `_modules` quickly, with
// exactly the result of getattr(module, name).
#pragma once

#include <Python.h>

namespace pyparams {

// getattr(module, name) as a new reference, or nullptr with an error set.
// For module classes whose attribute lookup is the default one (no custom
// __getattribute__, no class attribute or descriptor of that name), the
// value is read straight from the instance __dict__; every other case, and
// every miss, goes through PyObject_GetAttr.
PyObject* module_attribute(PyObject* module, PyObject* name);

// isinstance(object, torch.nn.Module), without running __instancecheck__.
bool is_module(PyObject* object);

// Captures what "default attribute lookup" means here. False with an error set.
bool init_module_attributes();

} // namespace pyparams
