// TorchScript modules: their own members, read through torch::jit::Module.
#pragma once

#include <Python.h>

namespace pyparams {

// 1 when `object`'s type is a torch.jit.ScriptModule subclass (its members
// live in C++), else 0. Reads the type's MRO only: never runs Python code.
int is_script_module(PyObject* object);

// A new list of (name, tensor) pairs: the parameters (or buffers) held by the
// ScriptModule `script_module` itself, not its submodules, in slot order, read
// from its torch::jit::Module. The tensors are the very Python objects
// `script_module._parameters.items()` yields. nullptr with an error set.
PyObject* script_module_members(PyObject* script_module, bool buffers);

}  // namespace pyparams
