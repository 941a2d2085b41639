#include "support/address_table_check.h"

#include <cstdint>
#include <cstring>

#include "support/address_table.h"
#include "support/owned_ref.h"

namespace pyparams {
namespace {

template <typename Table>
PyObject* run_ops(PyObject* ops) {
  OwnedRef sequence = OwnedRef::steal(PySequence_Fast(ops, "ops must be a sequence of (op, key)"));
  if (!sequence) {
    return nullptr;
  }
  Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence.get());
  OwnedRef answers = OwnedRef::steal(PyList_New(count));
  if (!answers) {
    return nullptr;
  }
  Table table;
  for (Py_ssize_t index = 0; index < count; ++index) {
    const char* op = nullptr;
    unsigned long long key = 0;
    if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sequence.get(), index), "sK;ops: (op, key)", &op,
                          &key)) {
      return nullptr;
    }
    if (key == 0 || (key & 1) != 0) {
      PyErr_Format(PyExc_ValueError, "keys must be nonzero and even, got %llu", key);
      return nullptr;
    }
    const void* address = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(key));
    bool answer = false;
    if (std::strcmp(op, "insert") == 0) {
      if (table.insert(address, answer) == nullptr) {
        return PyErr_NoMemory();
      }
    } else if (std::strcmp(op, "erase") == 0) {
      answer = table.erase(address);
    } else if (std::strcmp(op, "find") == 0) {
      answer = table.contains(address);
    } else {
      PyErr_Format(PyExc_ValueError, "unknown op '%s'", op);
      return nullptr;
    }
    PyList_SET_ITEM(answers.get(), index, Py_NewRef(answer ? Py_True : Py_False));
  }
  return answers.release();
}

}  // namespace

PyObject* run_address_table_ops(PyObject* ops, bool in_place) {
  return in_place ? run_ops<AddressTable<NoValue, 0>>(ops) : run_ops<AddressTable<NoValue>>(ops);
}

}  // namespace pyparams
