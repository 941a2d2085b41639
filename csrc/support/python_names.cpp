#include "support/python_names.h"

#include "support/owned_ref.h"

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

bool intern(PyObject*& field, const char* text) {
  field = PyUnicode_InternFromString(text);
  return field != nullptr;
}

}  // namespace

bool init_names() {
  if (g_names.module_class != nullptr) {
    return true;
  }
  // Filled apart and published whole: a failed init leaves g_names empty (the
  // interned strings it made are CPython's to keep).
  PythonNames made;
#define PYPARAMS_INTERN_NAME(field, text) \
  if (!intern(made.field, text)) {        \
    return false;                         \
  }
  PYPARAMS_INTERNED_NAMES(PYPARAMS_INTERN_NAME)
#undef PYPARAMS_INTERN_NAME
  for (std::size_t index = 0; index < kMethodCount; ++index) {
    if (!intern(made.methods[index], kMethodNames[index])) {
      return false;
    }
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
  made.script_module_class = script_module_class.release();
  made.module_class = module_class.release();  // it marks the names as loaded
  g_names = made;
  return true;
}

}  // namespace pyparams
