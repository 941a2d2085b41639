#include "python_names.h"

namespace pyparams {

PythonNames g_names;

namespace {

PyObject* import_attribute(const char* module_name, const char* attribute) {
  PyObject* module = PyImport_ImportModule(module_name);
  if (module == nullptr) {
    return nullptr;
  }
  PyObject* value = PyObject_GetAttrString(module, attribute);
  Py_DECREF(module);
  return value;
}

} // namespace

bool init_names() {
  if (g_names.parameters != nullptr) {
    return true;
  }
  PythonNames loaded;
  loaded.parameters = PyUnicode_InternFromString("_parameters");
  loaded.buffers = PyUnicode_InternFromString("_buffers");
  loaded.modules = PyUnicode_InternFromString("_modules");
  loaded.items = PyUnicode_InternFromString("items");
  loaded.requires_grad = PyUnicode_InternFromString("requires_grad");
  if (!loaded.parameters || !loaded.buffers || !loaded.modules || !loaded.items ||
      !loaded.requires_grad) {
    return false;
  }
  loaded.module_class = import_attribute("torch.nn", "Module");
  if (loaded.module_class == nullptr) {
    return false;
  }
  loaded.script_module_class = import_attribute("torch.jit", "ScriptModule");
  if (loaded.script_module_class == nullptr) {
    return false;
  }
  g_names = loaded;
  return true;
}

} // namespace pyparams
