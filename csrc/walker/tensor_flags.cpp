#include "walker/tensor_flags.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/csrc/autograd/python_variable.h>

#include "support/owned_ref.h"
#include "support/python_names.h"

namespace pyparams {
namespace {

PyObject* g_disabled_torch_function = nullptr;   // torch._C._disabled_torch_function_impl
PyObject* g_requires_grad_descriptor = nullptr;  // torch._C.TensorBase.requires_grad

// True when `type` is a torch.Tensor subclass whose attribute reads go
// through __torch_function__ (torch's own getter would dispatch to it).
bool overrides_torch_function(PyTypeObject* type) {
  PyObject* impl = _PyType_Lookup(type, names().torch_function);  // borrowed
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
      // A subclass may answer attribute reads itself (__getattribute__) ...
      type->tp_getattro == reinterpret_cast<PyTypeObject*>(THPVariableClass)->tp_getattro &&
      // ... or redefine the attribute (a property, a class attribute).
      _PyType_Lookup(type, names().requires_grad) == g_requires_grad_descriptor;
}

}  // namespace

int requires_grad(PyObject* value) {
  // An active torch function mode sees every attribute read of a tensor,
  // requires_grad included (torch's getter hands it over): then ask Python.
  if (reads_natively(Py_TYPE(value)) && !at::impl::torch_function_mode_enabled()) [[likely]] {
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
  // Set only once every lookup succeeded: a failed init leaves both null and
  // holds nothing, so a retry starts over instead of reporting a half-done success.
  if (g_requires_grad_descriptor != nullptr) {
    return true;
  }
  OwnedRef torch_c = OwnedRef::steal(PyImport_ImportModule("torch._C"));
  if (!torch_c) {
    return false;
  }
  OwnedRef disabled =
      OwnedRef::steal(PyObject_GetAttrString(torch_c.get(), "_disabled_torch_function_impl"));
  if (!disabled) {
    return false;
  }
  OwnedRef tensor_base = OwnedRef::steal(PyObject_GetAttrString(torch_c.get(), "TensorBase"));
  if (!tensor_base) {
    return false;
  }
  if (!PyType_Check(tensor_base.get())) {
    PyErr_SetString(PyExc_TypeError, "torch._C.TensorBase is not a type");
    return false;
  }
  OwnedRef descriptor = OwnedRef::borrow(
      _PyType_Lookup(reinterpret_cast<PyTypeObject*>(tensor_base.get()), names().requires_grad));
  if (!descriptor) {
    PyErr_SetString(PyExc_RuntimeError, "torch._C.TensorBase.requires_grad not found");
    return false;
  }
  g_disabled_torch_function = disabled.release();
  g_requires_grad_descriptor = descriptor.release();
  return true;
}

}  // namespace pyparams
