// torch's walking methods dispatch through `self`; where a class (or an
// instance) overrides one, the walk must call the override where torch would.
#pragma once

#include <Python.h>

#include <cstdint>

#include "support/dispatch_chain.h"

namespace pyparams {

// The interned name of `method` ("parameters", "_named_members", ...).
PyObject* method_name(Method method);

// The method called `name`; false when no method on the chain has that name.
bool method_named(const char* name, Method& method) noexcept;

// The chain as Python sees it: {kind: (method name per level, None where the
// kind has none, ..., "children")}. A new reference, or nullptr with an error set.
PyObject* dispatch_chain_as_dict();

// Bit `1 << Method` set for each method whose class attribute on `type` is
// not one of torch's base implementations (or a registered replacement).
// Calls _PyType_Lookup only: no user code runs.
std::uint32_t overridden_methods(PyTypeObject* type);

// The callable torch would call for `module.<method>` when it is not a base
// implementation: a new reference. nullptr with no error set when the base
// implementation is in effect (the walk goes on natively), nullptr with an
// error set on failure. Checks the class (cached by type version), then the
// instance __dict__ (an instance attribute shadows a method); classes with
// custom attribute lookup go through getattr, as torch's call would.
PyObject* override_for(PyObject* module, Method method);

// True when `module.<method>` is provably a base implementation without
// running any code: the class holds a base function, its attribute lookup is
// the default one, and its instance __dict__ has only exact str keys and no
// entry of that name. False when an override is found or it cannot be told so.
bool override_ruled_out_without_code(PyObject* module, Method method);

// Marks `function`, found on a class under the name of `method`, as a base
// implementation (a faithful replacement of torch's, like pyparams' patch).
// False with an error set.
bool register_base_method(Method method, PyObject* function);

// torch's `get_members_fn` for _named_members: `module._parameters.items()`
// (or `_buffers`), as a Python callable (borrowed, lives with the process).
PyObject* members_getter(bool buffers);

// Captures torch's own implementations from nn.Module. False with an error set.
bool init_dispatch();

}  // namespace pyparams
