// Interned attribute names and the torch classes the walker needs, looked up once.
#pragma once

#include <Python.h>

namespace pyparams {

struct PythonNames {
  PyObject* parameters = nullptr;           // "_parameters"
  PyObject* buffers = nullptr;              // "_buffers"
  PyObject* modules = nullptr;              // "_modules"
  PyObject* items = nullptr;                // "items"
  PyObject* requires_grad = nullptr;        // "requires_grad"
  PyObject* module_class = nullptr;         // torch.nn.Module
  PyObject* script_module_class = nullptr;  // torch.jit.ScriptModule
};

extern PythonNames g_names;

// Valid after init_names() succeeded; the references live as long as the process.
inline const PythonNames& names() noexcept {
  return g_names;
}

// Interns the names and imports the torch classes. False with an error set.
bool init_names();

}  // namespace pyparams
