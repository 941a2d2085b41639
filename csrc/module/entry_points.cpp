#include "module/entry_points.h"

#include <cstddef>

#include "module/collect.h"
#include "module/iterator.h"
#include "support/owned_ref.h"
#include "support/python_names.h"
#include "walker/dispatch.h"
#include "walker/module_attributes.h"
#include "walker/walker.h"

namespace pyparams {
namespace {

// The keyword-only arguments of walk() (collect() takes the same less named/prefix).
enum Argument : std::size_t {
  kKind,
  kNamed,
  kPrefix,
  kRecurse,
  kRemoveDuplicate,
  kTrainable,
  kDispatch,
  kArgumentCount
};
// Interned (python_names.h), for the pointer comparison; in Argument's order.
// Members, not values: one load per comparison, no table rebuilt per call.
constexpr PyObject* PythonNames::* kArgumentNames[kArgumentCount] = {
    &PythonNames::argument_kind,
    &PythonNames::argument_named,
    &PythonNames::argument_prefix,
    &PythonNames::argument_recurse,
    &PythonNames::argument_remove_duplicate,
    &PythonNames::argument_trainable,
    &PythonNames::argument_dispatch};

PyObject* argument_name(const PythonNames& n, std::size_t argument) {
  return n.*kArgumentNames[argument];
}

// The public functions' default for an optional argument (set_unset): the
// caller did not pass it. An override at the root is called with only what
// the caller passed, as `m.X(...)` calls it.
PyObject* g_unset = nullptr;

PyObject* set_unset(PyObject*, PyObject* unset) {
  Py_XSETREF(g_unset, Py_NewRef(unset));
  Py_RETURN_NONE;
}

// Fills `values` (nullptr: not given, or given as the unset default) from the
// call's keywords. Call sites' keyword names are interned, so a pointer
// comparison finds them; equal strings that are not interned are found by value.
bool parse_arguments(const char* function, PyObject* const* args, Py_ssize_t nargs,
                     PyObject* kwnames, bool takes_names, PyObject** values) {
  if (nargs != 1) {
    PyErr_Format(PyExc_TypeError,
                 "%s() takes 1 positional argument (the module) but %zd were given; "
                 "the others are keyword-only",
                 function, nargs);
    return false;
  }
  for (std::size_t i = 0; i < kArgumentCount; ++i) {
    values[i] = nullptr;
  }
  const PythonNames& n = names();
  Py_ssize_t keywords = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t k = 0; k < keywords; ++k) {
    PyObject* keyword = PyTuple_GET_ITEM(kwnames, k);
    std::size_t found = kArgumentCount;
    for (std::size_t i = 0; i < kArgumentCount && found == kArgumentCount; ++i) {
      if (keyword == argument_name(n, i)) {
        found = i;
      }
    }
    for (std::size_t i = 0; i < kArgumentCount && found == kArgumentCount; ++i) {
      if (PyUnicode_Compare(keyword, argument_name(n, i)) == 0) {
        found = i;
      }
    }
    if (found == kArgumentCount || (!takes_names && (found == kNamed || found == kPrefix))) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", function,
                   keyword);
      return false;
    }
    PyObject* value = args[nargs + k];
    values[found] = value == g_unset ? nullptr : value;
  }
  if (values[kKind] == nullptr) {
    PyErr_Format(PyExc_TypeError, "%s() missing required keyword-only argument: 'kind'", function);
    return false;
  }
  return true;
}

// A flag argument: its truth, as bool() gives it; `fallback` when not given.
int flag(PyObject* value, bool fallback) {
  return value == nullptr ? static_cast<int>(fallback) : PyObject_IsTrue(value);
}

bool to_kind(PyObject* value, Kind& kind) {
  long number = PyLong_Check(value) ? PyLong_AsLong(value) : -1;
  if (number < 0 || number > static_cast<long>(Kind::Modules)) {
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "kind must be PARAMETERS, BUFFERS or MODULES, got %R", value);
    return false;
  }
  kind = static_cast<Kind>(number);
  return true;
}

// The name of `level` on a walk of `kind`'s chain, or null where it has none.
PyObject* level_name(Kind kind, Dispatch level) {
  if (level == Dispatch::Children) {
    return names().children_level;
  }
  Method method = chain_method(kind, level);
  return method == Method::Count ? nullptr : method_name(method);
}

// The level of the chain (dispatch_chain.h) a walk starts at, by its
// method's name. The names come as literals from the patch, so interned:
// compared by pointer first, by value only when none is the same object.
bool to_dispatch(Kind kind, bool named, PyObject* value, Dispatch& dispatch) {
  if (value == nullptr || value == Py_None) {
    dispatch = !named           ? Dispatch::Public
        : kind == Kind::Modules ? Dispatch::NamedModules
                                : Dispatch::Named;
    return true;
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t index = 0; index < kLevelCount; ++index) {
      auto level = static_cast<Dispatch>(index);
      PyObject* name = level_name(kind, level);
      if (name != nullptr &&
          (value == name ||
           (pass == 1 && PyUnicode_Check(value) && PyUnicode_Compare(value, name) == 0))) {
        dispatch = level;
        return true;
      }
    }
  }
  PyErr_Clear();
  PyErr_Format(PyExc_ValueError,
               "dispatch %R is not a method on torch's dispatch chain for this kind of walk",
               value);
  return false;
}

// torch's own arguments `recurse` and `remove_duplicate` other than True and
// False: torch asks their truth where its generators read them (recurse at the
// first next(), remove_duplicate for every module and member), user code a
// native walk does not run. Such a call is torch's to walk (g_torch_walk).
bool torch_flag(PyObject* value, bool fallback, bool& flag_value) {
  flag_value = value == nullptr ? fallback : value == Py_True;
  return value == nullptr || value == Py_True || value == Py_False;
}

// The walk torch's own methods make for this call, arguments unchanged: the
// Python function pyparams registers at import (set_torch_walk).
PyObject* g_torch_walk = nullptr;

PyObject* walk_with_torch(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  if (g_torch_walk == nullptr) {
    PyErr_SetString(PyExc_TypeError, "recurse and remove_duplicate must be True or False");
    return nullptr;
  }
  return PyObject_Vectorcall(g_torch_walk, args, static_cast<std::size_t>(nargs), kwnames);
}

PyObject* set_torch_walk(PyObject*, PyObject* walk) {
  if (!PyCallable_Check(walk)) {
    PyErr_Format(PyExc_TypeError, "set_torch_walk() needs a callable, got %.100s",
                 Py_TYPE(walk)->tp_name);
    return nullptr;
  }
  Py_XSETREF(g_torch_walk, Py_NewRef(walk));
  Py_RETURN_NONE;
}

// The patch's methods (a `dispatch` given) called on an object that is no
// Module: a duck type that borrowed torch's method, a mock. Torch's own
// function runs there, as it would unpatched.
bool is_foreign_self(PyObject* const* values, PyObject* self) {
  return values[kDispatch] != nullptr && values[kDispatch] != Py_None && g_torch_walk != nullptr &&
      !is_module(self);
}

// False with an error set, or (`is_torchs` set) when the walk is torch's to make.
bool to_options(PyObject* self, PyObject** values, bool named, WalkOptions& options,
                bool& is_torchs) {
  is_torchs = !torch_flag(values[kRecurse], true, options.recurse) ||
      !torch_flag(values[kRemoveDuplicate], true, options.remove_duplicate) ||
      is_foreign_self(values, self);
  if (is_torchs) {
    return false;
  }
  int trainable = flag(values[kTrainable], false);
  if (trainable < 0 || !to_kind(values[kKind], options.kind) ||
      !to_dispatch(options.kind, named, values[kDispatch], options.dispatch)) {
    return false;
  }
  options.trainable_only = trainable != 0;
  options.named = named;
  options.recurse_given = values[kRecurse] != nullptr;
  options.remove_duplicate_given = values[kRemoveDuplicate] != nullptr;
  options.prefix_given = named && values[kPrefix] != nullptr;
  return true;
}

PyObject* walk(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* values[kArgumentCount];
  if (!parse_arguments("walk", args, nargs, kwnames, true, values)) {
    return nullptr;
  }
  int named = flag(values[kNamed], false);
  WalkOptions options;
  bool is_torchs = false;
  if (named < 0 || !to_options(args[0], values, named != 0, options, is_torchs)) {
    return is_torchs ? walk_with_torch(args, nargs, kwnames) : nullptr;
  }
  PyObject* prefix = values[kPrefix] != nullptr ? values[kPrefix] : names().empty;
  return new_walk_iterator(args[0], prefix, options);
}

PyObject* collect(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* values[kArgumentCount];
  WalkOptions options;
  bool is_torchs = false;
  if (!parse_arguments("collect", args, nargs, kwnames, false, values) ||
      !to_options(args[0], values, false, options, is_torchs)) {
    if (!is_torchs) {
      return nullptr;
    }
    OwnedRef walk = OwnedRef::steal(walk_with_torch(args, nargs, kwnames));
    return walk ? PySequence_List(walk.get()) : nullptr;
  }
  return collect_list(args[0], options);
}

// (PyCFunctionFastWithKeywords, spelled out: 3.10 and 3.11 call it _PyCFunctionFastWithKeywords.)
using FastWithKeywords = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);

PyCFunction fastcall(FastWithKeywords function) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(function));
}

PyMethodDef entry_points[] = {
    {"walk", fastcall(walk), METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("walk(module, *, kind, named=False, prefix='', recurse=True, remove_duplicate=True, "
               "trainable=False, dispatch=None)\n--\n\n"
               "Return a lazy iterator over `module`'s parameters, buffers or modules.\n"
               "A `recurse` or `remove_duplicate` that is neither True nor False (torch asks\n"
               "their truth where its generators read them), or a `dispatch` on an object that\n"
               "is no Module (the patch's methods on a duck type), is walked by the function\n"
               "set_torch_walk() registered, with these arguments. An argument given as the\n"
               "object set_unset() registered counts as not given.\n\n"
               "`kind` is PARAMETERS, BUFFERS or MODULES; `named` yields (name, object) pairs\n"
               "whose names start with `prefix`; `trainable` keeps entries whose requires_grad\n"
               "is True, read as each is reached. `dispatch` names the first method of torch's\n"
               "dispatch chain whose override on `module` is honoured (None: the method the\n"
               "public function mirrors; \"children\": only the submodules' named_modules).")},
    {"collect", fastcall(collect), METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("collect(module, *, kind, recurse=True, remove_duplicate=True, trainable=False, "
               "dispatch=None)\n--\n\n"
               "Return a new list of what walk() would yield (unnamed), built in one native "
               "call.")},
    {"set_unset", set_unset, METH_O,
     PyDoc_STR("set_unset(unset)\n--\n\n"
               "Register the object the public functions take as the default of an optional\n"
               "argument: an argument given as it counts as not given, so an override at the\n"
               "root is called without it.")},
    {"set_torch_walk", set_torch_walk, METH_O,
     PyDoc_STR("set_torch_walk(walk)\n--\n\n"
               "Register the walk torch's own methods make, called with walk()'s arguments for "
               "flags that are no bool.")},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

bool add_entry_points(PyObject* module) {
  return PyModule_AddFunctions(module, entry_points) == 0;
}

}  // namespace pyparams
