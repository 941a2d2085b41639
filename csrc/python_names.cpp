#include "python_names.h"

#include "owned_ref.h"

namespace pyparams {

PythonNames g_names;

namespace {

OwnedRef import_attribute(const char* module_name, const char* attribute) {
  OwnedRef module = OwnedRef::steal(PyImport_ImportModule(module_name));
  if (!module) {
    return {};
  }
  return OwnedRef::steal(PyObject_GetAttrString(module.get(), attribute));
}

}  // namespace

bool init_names() {
  if (g_names.parameters != nullptr) {
    return true;
  }
  // Owned until every lookup succeeded: a failed init releases what it took.
  OwnedRef parameters = OwnedRef::steal(PyUnicode_InternFromString("_parameters"));
  OwnedRef buffers = OwnedRef::steal(PyUnicode_InternFromString("_buffers"));
  OwnedRef modules = OwnedRef::steal(PyUnicode_InternFromString("_modules"));
  OwnedRef items = OwnedRef::steal(PyUnicode_InternFromString("items"));
  OwnedRef requires_grad = OwnedRef::steal(PyUnicode_InternFromString("requires_grad"));
  if (!parameters || !buffers || !modules || !items || !requires_grad) {
    return false;
  }
  OwnedRef module_class = import_attribute("torch.nn", "Module");
  if (!module_class) {
    return false;
  }
  OwnedRef script_module_class = import_attribute("torch.jit", "ScriptModule");
  if (!script_module_class) {
    return false;
  }
  if (!PyType_Check(module_class.get()) || !PyType_Check(script_module_class.get())) {
    PyErr_SetString(PyExc_TypeError, "torch.nn.Module or torch.jit.ScriptModule is not a type");
    return false;
  }
  g_names.buffers = buffers.release();
  g_names.modules = modules.release();
  g_names.items = items.release();
  g_names.requires_grad = requires_grad.release();
  g_names.module_class = module_class.release();
  g_names.script_module_class = script_module_class.release();
  g_names.parameters = parameters.release();  // last: it marks the names as loaded
  return true;
}

}  // namespace pyparams
