#include "walker/memo_hash.h"

#include <utility>

#include <torch/csrc/autograd/python_variable.h>

#include "support/python_names.h"
#include "walker/module_attributes.h"

namespace pyparams {
namespace detail {

ProvenTensorHash g_last_tensor_hash;
ProvenTensorHash g_other_tensor_hash;
PyObject* g_tensor_hash = nullptr;
PyObject* g_tensor_hash_code = nullptr;

bool prove_tensor_hash(PyTypeObject* type) {
  if (type == g_other_tensor_hash.type && type->tp_version_tag == g_other_tensor_hash.version &&
      PyFunction_GET_CODE(g_tensor_hash) == g_tensor_hash_code) {
    std::swap(g_last_tensor_hash, g_other_tensor_hash);
    return true;
  }
  auto* tensor = reinterpret_cast<PyTypeObject*>(THPVariableClass);
  if (g_tensor_hash == nullptr || tensor == nullptr || type->tp_hash != tensor->tp_hash) {
    return false;  // not a tensor class's slot: the hash is some other code
  }
  // _PyType_Lookup reads the classes' own dicts (str keys): no code runs.
  if (_PyType_Lookup(type, names().hash) != g_tensor_hash ||
      PyFunction_GET_CODE(g_tensor_hash) != g_tensor_hash_code) {
    return false;
  }
  unsigned int version = type_version(type);  // (the look-up above assigns one if it can)
  if (version != 0) {
    g_other_tensor_hash = g_last_tensor_hash;
    g_last_tensor_hash = {type, version};
  }
  return true;
}

}  // namespace detail

bool init_memo_hash() {
  if (detail::g_tensor_hash != nullptr) {
    return true;
  }
  auto* tensor = reinterpret_cast<PyTypeObject*>(THPVariableClass);
  if (tensor == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "torch.Tensor is not initialized");
    return false;
  }
  PyObject* hash = _PyType_Lookup(tensor, names().hash);  // borrowed
  // A torch whose Tensor.__hash__ is no Python function leaves every member
  // to the real set: correct, and slower.
  if (hash == nullptr || !PyFunction_Check(hash)) {
    return true;
  }
  Py_INCREF(hash);
  detail::g_tensor_hash_code = Py_NewRef(PyFunction_GET_CODE(hash));
  detail::g_tensor_hash = hash;
  return true;
}

}  // namespace pyparams
