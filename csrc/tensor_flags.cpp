#include "tensor_flags.h"

#include <torch/csrc/autograd/python_variable.h>

#include "python_names.h"

namespace pyparams {
namespace {

PyObject* g_torch_function_name = nullptr;       // "__torch_function__"
PyObject* g_disabled_torch_function = nullptr;  // torch._C._disabled_torch_function_impl
PyObject* g_requires_grad_descriptor = nullptr; // torch._C.TensorBase.requires_grad

// True when `type` is a torch.Tensor subclass whose attribute reads go
// through __torch_function__ (torch's own getter would dispatch to it).
bool overrides_torch_function(PyTypeObject* type) {
  PyObject* impl = _PyType_Lookup(type, g_torch_function_name);  // borrowed
  return impl != nullptr && impl != g_disabled_torch_function;
}

bool reads_natively(PyTypeObject* type) {
  if (type == reinterpret_cast<PyTypeObject*>(ParameterClass) ||
      type == reinterpret_cast<PyTypeObject*>(THPVariableClass)) [[likely]] {
    return true;
  }
  return THPVariableClass != nullptr &&
      PyType_IsSubtype(type, reinterpret_cast<PyTypeObject*>(THPVariableClass)) &&
      !overrides_torch_function(type) &&
      // A subclass may redefine the attribute itself (a property, a class attribute).
      _PyType_Lookup(type, names().requires_grad) == g_requires_grad_descriptor;
}

} // namespace

int requires_grad(PyObject* value) {
  if (reads_natively(Py_TYPE(value))) [[likely]] {
    return THPVariable_Unpack(value).requires_grad() ? 1 : 0;
  }
  PyObject* flag = PyObject_GetAttr(value, names().requires_grad);
  if (flag == nullptr) {
    return -1;
  }
  int truth = PyObject_IsTrue(flag);
  Py_DECREF(flag);
  return truth;
}

bool init_tensor_flags() {
  if (g_disabled_torch_function != nullptr) {
    return true;
  }
  g_torch_function_name = PyUnicode_InternFromString("__torch_function__");
  if (g_torch_function_name == nullptr) {
    return false;
  }
  PyObject* torch_c = PyImport_ImportModule("torch._C");
  if (torch_c == nullptr) {
    return false;
  }
  g_disabled_torch_function = PyObject_GetAttrString(torch_c, "_disabled_torch_function_impl");
  PyObject* tensor_base = PyObject_GetAttrString(torch_c, "TensorBase");
  Py_DECREF(torch_c);
  if (g_disabled_torch_function == nullptr || tensor_base == nullptr) {
    Py_XDECREF(tensor_base);
    return false;
  }
  g_requires_grad_descriptor =
      _PyType_Lookup(reinterpret_cast<PyTypeObject*>(tensor_base), names().requires_grad);
  Py_XINCREF(g_requires_grad_descriptor);
  Py_DECREF(tensor_base);
  if (g_requires_grad_descriptor == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "torch._C.TensorBase.requires_grad not found");
    return false;
  }
  return true;
}

} // namespace pyparams
