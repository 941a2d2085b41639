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
// managed dict of a CPython this was not built and tested for).
inline Py_ssize_t instance_dict_offset(PyTypeObject* type) {
#if PY_VERSION_HEX >= 0x030B0000  // managed dicts: 3.11 on
  if (PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)) {
    // 3.11 to 3.14 keep the dict pointer three words before the object; a
    // free-threaded build has no GC links there, and keeps it one word before.
#ifdef Py_GIL_DISABLED
    constexpr Py_ssize_t kWords = 1;
#else
    constexpr Py_ssize_t kWords = 3;
#endif
    return PY_VERSION_HEX < 0x030F0000 ? -kWords * static_cast<Py_ssize_t>(sizeof(PyObject*)) : 0;
  }
#endif
  return type->tp_dictoffset > 0 ? type->tp_dictoffset : 0;
}

// The version tag of `type`, 0 when it has none. CPython renews it whenever the
// class or a base changes; 3.13 no longer maintains Py_TPFLAGS_VALID_VERSION_TAG
// and marks "none" by 0 alone.
inline unsigned int type_version(PyTypeObject* type) {
#if PY_VERSION_HEX >= 0x030D0000
  return type->tp_version_tag;
#else
  return PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG) ? type->tp_version_tag : 0;
#endif
}

// Whether `type` still has `version`, a tag type_version() gave (never 0).
// Every CPython from 3.10 on zeroes the tag when a class changes, with the
// flag, and hands out each tag once: the tag alone answers, one load.
inline bool type_version_is(PyTypeObject* type, unsigned int version) {
  return type->tp_version_tag == version;
}

// True when `object` keeps its attributes inline, with no __dict__ made yet
// (managed dicts, CPython 3.11 on; false elsewhere). _PyObject_GetDictPtr would
// build that dict, about 64 bytes an object that torch's walk never spends:
// such objects are read with the generic lookup instead.
inline bool has_inline_attributes(PyObject* object) {
#if PY_VERSION_HEX >= 0x030B0000
  PyTypeObject* type = Py_TYPE(object);
  if (!PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)) {
    return false;
  }
  Py_ssize_t offset = instance_dict_offset(type);
  if (offset == 0) {
    return true;  // a layout not known here: never build a dict, ask the generic lookup
  }
  auto slot = *reinterpret_cast<std::uintptr_t*>(reinterpret_cast<char*>(object) + offset);
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
  // 3.12 keeps either the dict or the inline values there, the values tagged by bit 0.
  return slot == 0 || (slot & 1) != 0;
#else
  return slot == 0;  // 3.11, 3.13, 3.14: the dict, or null while the values are inline
#endif
#else
  (void)object;
  return false;
#endif
}

// dict[key] as a new reference (`found` set), or nullptr (`found` false, an
// error set or not), with `dict` held across the lookup: a colliding key's
// __eq__ may run there, and it may drop or change the dict.
PyObject* held_dict_lookup(PyObject* dict, PyObject* key, bool& found);

// True when every key of `dict` is an exact str: then a lookup of an exact str
// key compares str with str only and runs no user code (CPython's specializing
// interpreter trusts the same for its attribute loads). Runs no code itself.
bool keys_are_exact_str(PyObject* dict);

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
