#include "walker/module_attributes.h"

#include <cstdint>

#include "support/owned_ref.h"
#include "support/python_names.h"
#include "walker/dispatch.h"

namespace pyparams {
namespace {

// One cached class: its info, valid while the class keeps `version`.
struct CachedClass {
  PyTypeObject* type = nullptr;
  unsigned int version = 0;
  ModuleClassInfo info;
};

constexpr std::size_t kCacheSize = 256;  // direct-mapped; a model has a few dozen classes
CachedClass g_cache[kCacheSize];

PyObject* g_object_getattribute = nullptr;  // object.__getattribute__
getattrofunc g_module_getattro = nullptr;   // torch.nn.Module's tp_getattro (its __getattr__ hook)

// Attribute lookup finds class attributes and the instance __dict__ before
// any user code runs (nn.Module's __getattr__ only runs on a miss).
bool has_default_lookup(PyTypeObject* type) {
  if (type->tp_getattro != PyObject_GenericGetAttr && type->tp_getattro != g_module_getattro) {
    return false;
  }
  return _PyType_Lookup(type, names().getattribute) == g_object_getattribute;
}

bool has_plain_attributes(PyTypeObject* type) {
  const PythonNames& n = names();
  return _PyType_Lookup(type, n.parameters) == nullptr &&
      _PyType_Lookup(type, n.buffers) == nullptr && _PyType_Lookup(type, n.modules) == nullptr;
}

ModuleClassInfo inspect_class(PyTypeObject* type) {
  ModuleClassInfo info;
  info.is_module = PyType_IsSubtype(type, reinterpret_cast<PyTypeObject*>(names().module_class));
  if (info.is_module) {
    info.default_lookup = has_default_lookup(type);
    info.plain_attributes = info.default_lookup && has_plain_attributes(type);
    info.overridden = overridden_methods(type);
  }
  return info;
}

}  // namespace

const ModuleClassInfo& module_class_info(PyTypeObject* type) {
  CachedClass& cached = g_cache[(reinterpret_cast<std::uintptr_t>(type) >> 4) % kCacheSize];
  unsigned int version = type_version(type);
  if (cached.type == type && version != 0 && cached.version == version) [[likely]] {
    return cached.info;
  }
  ModuleClassInfo fresh = inspect_class(type);
  // _PyType_Lookup above assigns a version tag when the class can have one;
  // without one the answer cannot be cached safely.
  version = type_version(type);
  if (version != 0) {
    cached.type = type;
    cached.version = version;
    cached.info = fresh;
    return cached.info;
  }
  static thread_local ModuleClassInfo uncached;
  uncached = fresh;
  return uncached;
}

void forget_module_classes() noexcept {
  for (CachedClass& cached : g_cache) {
    cached = CachedClass{};
  }
}

PyObject* held_dict_lookup(PyObject* dict, PyObject* key, bool& found) {
  // A colliding key's __eq__ may drop the dict (`m.__dict__ = {}`) while the
  // lookup still reads it: held across it, and the value owned before letting go.
  OwnedRef held = OwnedRef::borrow(dict);
  PyObject* value = PyDict_GetItemWithError(dict, key);  // borrowed
  found = value != nullptr;
  Py_XINCREF(value);
  return value;
}

namespace {

// CPython 3.11 to 3.14 (with the GIL) keep a dict's key kind in a byte of its
// keys object: DICT_KEYS_UNICODE (1) and DICT_KEYS_SPLIT (2) hold exact str
// keys only (inserting any other key makes the table general, 0). A private
// layout: init_module_attributes() checks it on dicts it builds, and without
// that check every answer comes from reading the keys.
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030F0000 && !defined(Py_GIL_DISABLED)
#define PYPARAMS_KEYS_KIND_BYTE 1
#else
#define PYPARAMS_KEYS_KIND_BYTE 0
#endif
#if PYPARAMS_KEYS_KIND_BYTE
constexpr std::size_t kKeysKindOffset = sizeof(Py_ssize_t) + 2;  // after dk_refcnt, two log2 bytes
bool g_keys_kind_known = false;

std::uint8_t keys_kind(PyObject* dict) {
  auto* keys =
      reinterpret_cast<const unsigned char*>(reinterpret_cast<PyDictObject*>(dict)->ma_keys);
  return keys[kKeysKindOffset];
}

// True when the layout reads as described on dicts built here.
bool check_keys_kind() {
  OwnedRef dict = OwnedRef::steal(PyDict_New());
  OwnedRef key = OwnedRef::steal(PyUnicode_FromString("pyparams"));
  OwnedRef number = OwnedRef::steal(PyLong_FromLong(7));
  if (!dict || !key || !number || PyDict_SetItem(dict.get(), key.get(), Py_None) < 0) {
    PyErr_Clear();
    return false;
  }
  bool unicode = keys_kind(dict.get()) == 1;
  if (PyDict_SetItem(dict.get(), number.get(), Py_None) < 0) {
    PyErr_Clear();
    return false;
  }
  return unicode && keys_kind(dict.get()) == 0;
}
#endif

}  // namespace

bool keys_are_exact_str(PyObject* dict) {
#if PYPARAMS_KEYS_KIND_BYTE
  if (g_keys_kind_known) [[likely]] {
    std::uint8_t kind = keys_kind(dict);
    if (kind == 1 || kind == 2) {
      return true;  // one load instead of a pass over the keys
    }
  }
#endif
  Py_ssize_t position = 0;
  PyObject* key;
  PyObject* value;
  while (PyDict_Next(dict, &position, &key, &value)) {
    if (!PyUnicode_CheckExact(key)) {
      return false;
    }
  }
  return true;
}

bool is_module(PyObject* object) {
  return module_class_info(Py_TYPE(object)).is_module;
}

PyObject* module_attribute(PyObject* module, PyObject* name, bool* from_dict) {
  if (from_dict != nullptr) {
    *from_dict = false;
  }
  if (module_class_info(Py_TYPE(module)).plain_attributes) [[likely]] {
    if (has_inline_attributes(module)) {
      PyObject* value = PyObject_GenericGetAttr(module, name);
      if (value != nullptr || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return value;
      }
      PyErr_Clear();  // not an instance attribute: the class's __getattr__ may know it
      return PyObject_GetAttr(module, name);
    }
    // The instance __dict__ slot; a missing dict falls back to getattr.
    PyObject** slot = _PyObject_GetDictPtr(module);
    if (slot != nullptr && *slot != nullptr) {
      bool found = false;
      PyObject* value = held_dict_lookup(*slot, name, found);
      if (found) {
        if (from_dict != nullptr) {
          *from_dict = true;
        }
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
#if PYPARAMS_KEYS_KIND_BYTE
  g_keys_kind_known = check_keys_kind();
#endif
  g_object_getattribute = _PyType_Lookup(&PyBaseObject_Type, names().getattribute);
  if (g_object_getattribute == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "object.__getattribute__ not found");
    return false;
  }
  Py_INCREF(g_object_getattribute);
  g_module_getattro = reinterpret_cast<PyTypeObject*>(names().module_class)->tp_getattro;
  return true;
}

}  // namespace pyparams
