// For the tests: the address table driven by a script of operations.
#pragma once

#include <Python.h>

namespace pyparams {

// Runs `ops`, a sequence of (op, key) pairs ("insert", "erase" or "find"; the
// key a nonzero even int, an address the table never dereferences), on one
// table that grows in place from its first growth on (`in_place`) or only from
// its default size. Returns a new list of each op's answer (added, erased,
// found), or nullptr with an error set.
PyObject* run_address_table_ops(PyObject* ops, bool in_place);

}  // namespace pyparams
