#include "walker/dispatch.h"

#include <array>
#include <cstring>
#include <new>
#include <vector>

#include "cache/walk_cache.h"
#include "support/owned_ref.h"
#include "support/python_names.h"
#include "walker/module_attributes.h"

namespace pyparams {
namespace {

// The base implementations of each method (strong references, kept for the
// life of the process): torch's own, plus registered faithful replacements.
std::array<std::vector<PyObject*>, kMethodCount> g_base_methods;

std::uint32_t bit(Method method) {
  return 1u << static_cast<unsigned>(method);
}

bool is_base(Method method, PyObject* function) {
  for (PyObject* base : g_base_methods[static_cast<std::size_t>(method)]) {
    if (base == function) {
      return true;
    }
  }
  return false;
}

// `module._parameters.items()` / `module._buffers.items()`: the lambda torch's
// named_parameters / named_buffers hand to _named_members, which takes
// `module` by position or by keyword. `attribute_name`: the function's self.
PyObject* member_items(PyObject* attribute_name, PyObject* args, PyObject* kwargs) {
  static const char* keywords[] = {"module", nullptr};
  PyObject* module;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:<lambda>", const_cast<char**>(keywords),
                                   &module)) {
    return nullptr;
  }
  OwnedRef mapping = OwnedRef::steal(PyObject_GetAttr(module, attribute_name));
  if (!mapping) {
    return nullptr;
  }
  return PyObject_CallMethodNoArgs(mapping.get(), names().items);
}

PyCFunction with_keywords(PyCFunctionWithKeywords function) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(function));
}

PyMethodDef g_parameter_items_def = {"parameter_items", with_keywords(member_items),
                                     METH_VARARGS | METH_KEYWORDS, "module._parameters.items()"};
PyMethodDef g_buffer_items_def = {"buffer_items", with_keywords(member_items),
                                  METH_VARARGS | METH_KEYWORDS, "module._buffers.items()"};
PyObject* g_parameter_items = nullptr;
PyObject* g_buffer_items = nullptr;

// torch's own function, when nn.Module still holds it (a library may have
// replaced it before pyparams was imported: then it is no base, and the walk
// calls whatever is there, as torch would).
bool register_torch_original(Method method, PyTypeObject* module_type) {
  PyObject* name = names().methods[static_cast<std::size_t>(method)];
  PyObject* function = _PyType_Lookup(module_type, name);  // borrowed
  if (function == nullptr || !PyFunction_Check(function)) {
    return true;
  }
  PyObject* defined_in = PyFunction_GET_MODULE(function);
  if (defined_in == nullptr || !PyUnicode_Check(defined_in) ||
      PyUnicode_CompareWithASCIIString(defined_in, "torch.nn.modules.module") != 0) {
    return true;
  }
  return register_base_method(method, function);
}

}  // namespace

PyObject* method_name(Method method) {
  return names().methods[static_cast<std::size_t>(method)];
}

bool method_named(const char* name, Method& method) noexcept {
  for (std::size_t index = 0; index < kMethodCount; ++index) {
    if (std::strcmp(kMethodNames[index], name) == 0) {
      method = static_cast<Method>(index);
      return true;
    }
  }
  return false;
}

std::uint32_t overridden_methods(PyTypeObject* type) {
  std::uint32_t overridden = 0;
  for (std::size_t index = 0; index < kMethodCount; ++index) {
    auto method = static_cast<Method>(index);
    PyObject* found = _PyType_Lookup(type, names().methods[index]);  // borrowed
    if (found == nullptr || !is_base(method, found)) {
      overridden |= bit(method);
    }
  }
  return overridden;
}

PyObject* override_for(PyObject* module, Method method) {
  PyObject* name = method_name(method);
  const ModuleClassInfo& info = module_class_info(Py_TYPE(module));
  // Only classes whose members live in the instance __dict__ are read here;
  // an instance keeping its attributes inline is asked by the generic lookup.
  bool default_lookup =
      info.default_lookup && info.plain_attributes && !has_inline_attributes(module);
  bool overridden_by_class = (info.overridden & bit(method)) != 0;
  if (default_lookup) [[likely]] {
    if (overridden_by_class) {
      return PyObject_GetAttr(module, name);
    }
    // The class holds a base function (a non-data descriptor): an instance
    // attribute of that name wins over it, exactly as in `module.<name>`.
    PyObject** dict = _PyObject_GetDictPtr(module);
    if (dict == nullptr || *dict == nullptr) {
      return nullptr;
    }
    bool found = false;
    return held_dict_lookup(*dict, name, found);
  }
  // Custom lookup, or attributes kept inline: ask it, as torch's
  // `self.<name>(...)` would, and keep to the native walk only when it hands
  // back a base method bound to `module`.
  OwnedRef attribute = OwnedRef::steal(PyObject_GetAttr(module, name));
  if (!attribute) {
    return nullptr;
  }
  if (PyMethod_Check(attribute.get()) && PyMethod_GET_SELF(attribute.get()) == module &&
      is_base(method, PyMethod_GET_FUNCTION(attribute.get()))) {
    return nullptr;
  }
  return attribute.release();
}

bool override_ruled_out_without_code(PyObject* module, Method method) {
  const ModuleClassInfo& info = module_class_info(Py_TYPE(module));
  if (!info.is_module || !info.default_lookup || !info.plain_attributes ||
      (info.overridden & bit(method)) != 0 || has_inline_attributes(module)) {
    return false;
  }
  PyObject** dict = _PyObject_GetDictPtr(module);
  if (dict == nullptr || *dict == nullptr) {
    return true;  // no instance attribute can shadow the class's base function
  }
  return PyDict_CheckExact(*dict) && keys_are_exact_str(*dict) &&
      PyDict_GetItem(*dict, method_name(method)) == nullptr;
}

PyObject* dispatch_chain_as_dict() {
  OwnedRef chain = OwnedRef::steal(PyDict_New());
  if (!chain) {
    return nullptr;
  }
  for (std::size_t kind = 0; kind < kKindCount; ++kind) {
    OwnedRef levels = OwnedRef::steal(PyTuple_New(kLevelCount));
    if (!levels) {
      return nullptr;
    }
    for (std::size_t level = 0; level < kLevelCount; ++level) {
      Method method = chain_method(static_cast<Kind>(kind), static_cast<Dispatch>(level));
      PyObject* name = level + 1 == kLevelCount ? Py_NewRef(names().children_level)
          : method == Method::Count             ? Py_NewRef(Py_None)
                                                : Py_NewRef(method_name(method));
      if (name == nullptr) {
        return nullptr;
      }
      PyTuple_SET_ITEM(levels.get(), level, name);
    }
    OwnedRef key = OwnedRef::steal(PyLong_FromSize_t(kind));
    if (!key || PyDict_SetItem(chain.get(), key.get(), levels.get()) < 0) {
      return nullptr;
    }
  }
  return chain.release();
}

bool register_base_method(Method method, PyObject* function) {
  auto& bases = g_base_methods[static_cast<std::size_t>(method)];
  if (is_base(method, function)) {
    return true;
  }
  try {
    bases.push_back(function);
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
    return false;
  }
  Py_INCREF(function);
  forget_module_classes();
  advance_dispatch_epoch();  // a class's version now proves something else
  return true;
}

PyObject* members_getter(bool buffers) {
  return buffers ? g_buffer_items : g_parameter_items;
}

bool init_dispatch() {
  if (g_parameter_items != nullptr) {
    return true;
  }
  auto* module_type = reinterpret_cast<PyTypeObject*>(names().module_class);
  for (std::size_t index = 0; index < kMethodCount; ++index) {
    if (!register_torch_original(static_cast<Method>(index), module_type)) {
      return false;
    }
  }
  OwnedRef parameter_getter =
      OwnedRef::steal(PyCFunction_New(&g_parameter_items_def, names().parameters));
  OwnedRef buffer_getter = OwnedRef::steal(PyCFunction_New(&g_buffer_items_def, names().buffers));
  if (!parameter_getter || !buffer_getter) {
    return false;
  }
  g_buffer_items = buffer_getter.release();
  g_parameter_items = parameter_getter.release();
  return true;
}

}  // namespace pyparams
