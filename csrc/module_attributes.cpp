#include "module_attributes.h"

#include <cstdint>

#include "python_names.h"

namespace pyparams {
namespace {

// What the walker needs to know about one module class. Valid while the
// class keeps the version tag it had when this was filled: CPython gives a
// class a new tag whenever it (or a base) is modified.
struct TypeInfo {
  PyTypeObject* type = nullptr;
  unsigned int version = 0;
  bool is_module = false;
  bool plain_attributes = false;  // member attributes live in the instance __dict__
};

constexpr std::size_t kCacheSize = 256;  // direct-mapped; a model has a few dozen classes
TypeInfo g_cache[kCacheSize];

PyObject* g_object_getattribute = nullptr;  // object.__getattribute__
PyObject* g_getattribute_name = nullptr;    // "__getattribute__"
getattrofunc g_module_getattro = nullptr;   // torch.nn.Module's tp_getattro (its __getattr__ hook)

bool has_plain_attributes(PyTypeObject* type) {
  if (type->tp_getattro != PyObject_GenericGetAttr && type->tp_getattro != g_module_getattro) {
    return false;
  }
  if (_PyType_Lookup(type, g_getattribute_name) != g_object_getattribute) {
    return false;
  }
  const PythonNames& n = names();
  return _PyType_Lookup(type, n.parameters) == nullptr &&
      _PyType_Lookup(type, n.buffers) == nullptr && _PyType_Lookup(type, n.modules) == nullptr;
}

const TypeInfo& type_info(PyTypeObject* type) {
  auto slot = (reinterpret_cast<std::uintptr_t>(type) >> 4) % kCacheSize;
  TypeInfo& info = g_cache[slot];
  bool valid_tag = PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG);
  if (info.type == type && valid_tag && info.version == type->tp_version_tag) [[likely]] {
    return info;
  }
  TypeInfo fresh;
  fresh.is_module =
      PyType_IsSubtype(type, reinterpret_cast<PyTypeObject*>(names().module_class));
  fresh.plain_attributes = fresh.is_module && has_plain_attributes(type);
  // _PyType_Lookup above assigns a version tag when the class can have one;
  // without one the answer cannot be cached safely.
  if (PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) {
    fresh.type = type;
    fresh.version = type->tp_version_tag;
    info = fresh;
    return info;
  }
  static thread_local TypeInfo uncached;
  uncached = fresh;
  return uncached;
}

} // namespace

bool is_module(PyObject* object) {
  return type_info(Py_TYPE(object)).is_module;
}

PyObject* module_attribute(PyObject* module, PyObject* name) {
  if (type_info(Py_TYPE(module)).plain_attributes) [[likely]] {
    // The instance __dict__ slot (materialized if the object kept its
    // attributes inline); a missing dict falls back to getattr.
    PyObject** dict = _PyObject_GetDictPtr(module);
    if (dict != nullptr && *dict != nullptr) {
      PyObject* value = PyDict_GetItemWithError(*dict, name);  // borrowed
      if (value != nullptr) {
        Py_INCREF(value);
        return value;
      }
      if (PyErr_Occurred()) {
        return nullptr;
      }
    }
  }
  return PyObject_GetAttr(module, name);
}

bool init_module_attributes() {
  g_getattribute_name = PyUnicode_InternFromString("__getattribute__");
  if (g_getattribute_name == nullptr) {
    return false;
  }
  g_object_getattribute = _PyType_Lookup(&PyBaseObject_Type, g_getattribute_name);
  if (g_object_getattribute == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "object.__getattribute__ not found");
    return false;
  }
  Py_INCREF(g_object_getattribute);
  g_module_getattro = reinterpret_cast<PyTypeObject*>(names().module_class)->tp_getattro;
  return true;
}

} // namespace pyparams
