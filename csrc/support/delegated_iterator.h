// What CPython's generators do to the iterator their `yield from` waits on
// (PEP 380), for a walk that stands in for such a generator: its send(),
// throw() and close() reach the iterator an override returned.
#pragma once

#include <Python.h>

#include "support/owned_ref.h"

namespace pyparams {

// gen_close_iter: a generator's close(), else the iterator's `close`
// attribute where it has one (a failed look-up is reported as unraisable,
// and then there is none). 0, or -1 with the error its close() raised.
int close_delegated(PyObject* iterator);

// close_delegated() where torch's generators close the iterator as they are
// freed (a finalizer): a GeneratorExit is taken for done (the generator that
// waits on it ends with it), any other error reported as unraisable; an
// error already set waits aside meanwhile.
void close_delegated_as_freed(PyObject* iterator);

// The iterator's `throw`, looked up as _gen_throw looks it up: 1 with
// `method` set, 0 where it has none, -1 with the look-up's error set.
int find_throw(PyObject* iterator, OwnedRef& method);

// The delegating generator's throw(typ[, value[, traceback]]) handed to
// `iterator` through `method`, its `throw` (the arguments as the caller
// passed them; value and traceback nullptr where not passed). Its result:
//   Yielded:  `item` is what it yielded (a new reference): throw()'s result;
//   Returned: it raised StopIteration, now cleared: the `yield from` ends;
//   Raised:   the error it raised is set: the delegating frames raise it.
enum class DelegatedThrow { Yielded, Returned, Raised };
DelegatedThrow throw_into_delegated(PyObject* iterator, PyObject* method, PyObject* type,
                                    PyObject* value, PyObject* traceback, PyObject*& item);

}  // namespace pyparams
