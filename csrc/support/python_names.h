// Every interned name pyparams uses, and the torch classes the walker needs:
// made once, in one place, at import; the references live as long as the process.
#pragma once

#include <Python.h>

#include "support/dispatch_chain.h"

namespace pyparams {

// (field, the str it holds)
#define PYPARAMS_INTERNED_NAMES(X)                 \
  X(parameters, "_parameters")                     \
  X(buffers, "_buffers")                           \
  X(modules, "_modules")                           \
  X(items, "items")                                \
  X(requires_grad, "requires_grad")                \
  X(getattribute, "__getattribute__")              \
  X(hash, "__hash__")                              \
  X(torch_function, "__torch_function__")          \
  X(grad, "grad")                                  \
  X(training, "training")                          \
  X(grad_fn, "grad_fn")                            \
  X(detach_, "detach_")                            \
  X(requires_grad_, "requires_grad_")              \
  X(zero_, "zero_")                                \
  X(close, "close")                                \
  X(throw_, "throw")                               \
  X(empty, "")                                     \
  X(children_level, "children")                    \
  X(argument_kind, "kind")                         \
  X(argument_named, "named")                       \
  X(argument_prefix, "prefix")                     \
  X(argument_recurse, "recurse")                   \
  X(argument_remove_duplicate, "remove_duplicate") \
  X(argument_trainable, "trainable")               \
  X(argument_dispatch, "dispatch")

struct PythonNames {
#define PYPARAMS_NAME_FIELD(field, text) PyObject* field = nullptr;
  PYPARAMS_INTERNED_NAMES(PYPARAMS_NAME_FIELD)
#undef PYPARAMS_NAME_FIELD
  PyObject* methods[kMethodCount] = {};     // the dispatch chain's (dispatch_chain.h)
  PyObject* module_class = nullptr;         // torch.nn.Module
  PyObject* script_module_class = nullptr;  // torch.jit.ScriptModule
};

extern PythonNames g_names;

// Valid after init_names() succeeded.
inline const PythonNames& names() noexcept {
  return g_names;
}

// Interns the names and imports the torch classes. False with an error set.
bool init_names();

}  // namespace pyparams
