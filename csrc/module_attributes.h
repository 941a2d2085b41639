// Reading a module's `_parameters` / `_buffers` / `_modules` quickly, with
// exactly the result of getattr(module, name).
#pragma once

#include <Python.h>

#include <cstdint>

namespace pyparams {

// getattr(module, name) as a new reference, or nullptr with an error set.
// For module classes whose attribute lookup is the default one (no custom
// __getattribute__, no class attribute or descriptor of that name), the
// value is read straight from the instance __dict__; every other case, and
// every miss, goes through PyObject_GetAttr.
// `from_dict`, when given, is set to whether the value came from the instance
// __dict__ by the fast path (what the walk cache can prove by dict versions).
PyObject* module_attribute(PyObject* module, PyObject* name, bool* from_dict = nullptr);

// Where instances of `type` keep their __dict__ pointer, in bytes from the
// object; 0 for a layout not known here (a negative tp_dictoffset, or a
// managed dict outside CPython 3.11, whose slot is laid out differently).
inline Py_ssize_t instance_dict_offset(PyTypeObject* type) {
#if PY_VERSION_HEX >= 0x030B0000  // managed dicts: 3.11 on
  if (PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)) {
    return PY_VERSION_HEX < 0x030C0000 ? -3 * static_cast<Py_ssize_t>(sizeof(PyObject*)) : 0;
  }
#endif
  return type->tp_dictoffset > 0 ? type->tp_dictoffset : 0;
}

// True when `object` keeps its attributes inline, with no __dict__ made yet
// (CPython 3.11's managed dicts; false elsewhere). _PyObject_GetDictPtr would
// build that dict, about 64 bytes an object that torch's walk never spends:
// such objects are read with the generic lookup instead.
inline bool has_inline_attributes(PyObject* object) {
#if PY_VERSION_HEX >= 0x030B0000
  PyTypeObject* type = Py_TYPE(object);
  Py_ssize_t offset = instance_dict_offset(type);
  return PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT) && offset != 0 &&
      *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(object) + offset) == nullptr;
#else
  (void)object;
  return false;
#endif
}

// isinstance(object, torch.nn.Module), without running __instancecheck__.
bool is_module(PyObject* object);

// What the walker knows about one class, valid while the class keeps its
// version tag (CPython renews it whenever the class or a base changes).
struct ModuleClassInfo {
  bool is_module = false;
  bool default_lookup = false;    // attribute lookup never runs user code first
  bool plain_attributes = false;  // ... and member attributes live in the instance __dict__
  std::uint32_t overridden = 0;   // bits of dispatch methods not base (see dispatch.h)
};
const ModuleClassInfo& module_class_info(PyTypeObject* type);

// Forgets every cached class (the set of base implementations changed).
void forget_module_classes() noexcept;

// Captures what "default attribute lookup" means here. False with an error set.
bool init_module_attributes();

}  // namespace pyparams
