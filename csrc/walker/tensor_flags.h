// Reading tensor flags through LibTorch rather than Python attribute lookup.
#pragma once

#include <Python.h>

namespace pyparams {

// Whether `value` requires grad: 1 or 0, -1 with an error set.
// Tensors and Parameters (and subclasses that override neither
// __torch_function__, __getattribute__ nor requires_grad) are read through
// THPVariable_Unpack(value).requires_grad(); anything else (such a subclass,
// a non-tensor put straight into _parameters) through `value.requires_grad`,
// exactly what `p.requires_grad` in torch's own filter would run.
int requires_grad(PyObject* value);

// Looks up torch._C._disabled_torch_function_impl. False with an error set.
bool init_tensor_flags();

}  // namespace pyparams
