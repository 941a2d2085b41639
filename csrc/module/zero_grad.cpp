#include "module/zero_grad.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/csrc/autograd/python_variable.h>

#include "support/counted_next.h"
#include "support/owned_ref.h"
#include "support/python_names.h"

namespace pyparams {
namespace {

// `p.grad.<method>(*args)` with `p.grad` read again, as torch's loop reads it
// before each call. False with an error set.
bool call_on_grad(PyObject* p, PyObject* method, PyObject* arg) {
  OwnedRef grad = OwnedRef::steal(PyObject_GetAttr(p, names().grad));
  if (!grad) {
    return false;
  }
  OwnedRef result =
      OwnedRef::steal(arg == nullptr ? PyObject_CallMethodNoArgs(grad.get(), method)
                                     : PyObject_CallMethodOneArg(grad.get(), method, arg));
  return static_cast<bool>(result);
}

// The `else` branch of torch's loop, statement for statement:
//   if p.grad.grad_fn is not None: p.grad.detach_()
//   else: p.grad.requires_grad_(False)
//   p.grad.zero_()
bool zero_in_place(PyObject* p) {
  const PythonNames& n = names();
  OwnedRef grad = OwnedRef::steal(PyObject_GetAttr(p, n.grad));
  if (!grad) {
    return false;
  }
  OwnedRef grad_fn = OwnedRef::steal(PyObject_GetAttr(grad.get(), n.grad_fn));
  if (!grad_fn) {
    return false;
  }
  grad.reset();
  bool detached = grad_fn.get() != Py_None ? call_on_grad(p, n.detach_, nullptr)
                                           : call_on_grad(p, n.requires_grad_, Py_False);
  return detached && call_on_grad(p, n.zero_, nullptr);
}

// What `p.grad` holds: kNone, kGrad, kGradOfPlainTensor (a grad, and torch's
// own getter and setter would do no more than read and reset it in LibTorch),
// or kError with an error set. Read through LibTorch only where torch's getter
// would do no more than that: an exact Tensor/Parameter (no __torch_function__,
// no redefined `grad`), no mode active, and a leaf or retains_grad tensor (else
// the getter may warn).
enum GradState { kError = -1, kNone = 0, kGrad = 1, kGradOfPlainTensor = 2 };

GradState grad_state(PyObject* p) {
  if (THPVariable_CheckExact(p) && !at::impl::torch_function_mode_enabled()) [[likely]] {
    const at::Tensor& var = THPVariable_Unpack(p);
    if (var.is_leaf() || var.retains_grad()) [[likely]] {
      return var.unsafeGetTensorImpl()->grad().defined() ? kGradOfPlainTensor : kNone;
    }
  }
  OwnedRef grad = OwnedRef::steal(PyObject_GetAttr(p, names().grad));
  if (!grad) {
    return kError;
  }
  return grad.get() != Py_None ? kGrad : kNone;
}

bool zero_one(PyObject* p, PyObject* set_to_none) {
  GradState state = grad_state(p);
  if (state <= kNone) {
    return state == kNone;
  }
  int truth = PyObject_IsTrue(set_to_none);  // torch's `if set_to_none:`, per parameter
  if (truth < 0) {
    return false;
  }
  if (truth != 0) {
    if (state == kGradOfPlainTensor) [[likely]] {
      // What torch's setter does for `p.grad = None` on such a tensor (its
      // torch-function check is false for it), without the attribute lookup.
      // The slot is emptied before the grad is let go of: a finalizer its
      // release runs (one that calls zero_grad again) finds no grad there.
      at::Tensor released = std::move(THPVariable_Unpack(p).mutable_grad());
      return true;
    }
    // torch's own setter (`p.grad = None`), whatever p's type.
    return PyObject_SetAttr(p, names().grad, Py_None) == 0;
  }
  return zero_in_place(p);
}

}  // namespace

PyObject* zero_grad(PyObject* parameters, PyObject* set_to_none) {
  OwnedRef iterator = OwnedRef::steal(PyObject_GetIter(parameters));
  if (!iterator) {
    return nullptr;
  }
  while (OwnedRef p = OwnedRef::steal(next_counted(iterator.get()))) {
    if (!zero_one(p.get(), set_to_none)) {
      return nullptr;
    }
  }
  if (PyErr_Occurred()) {
    return nullptr;
  }
  Py_RETURN_NONE;
}

}  // namespace pyparams
