// TorchScript modules: their own members, read through torch::jit::Module.
#pragma once

#include <Python.h>

namespace pyparams {

// True when `object` is a torch.jit.ScriptModule (its members live in C++).
// -1 with an error set.
int is_script_module(PyObject* object);

// A new list of (name, tensor) pairs: the parameters (or buffers) held by the
// ScriptModule `script_module` itself, not its submodules, in slot order, read
// from its torch::jit::Module. The tensors are the very Python objects
// `script_module._parameters.items()` yields. nullptr with an error set.
PyObject* script_module_members(PyObject* script_module, bool buffers);

} // namespace pyparams
