// Module.zero_grad's per-parameter loop in C++: the walk stays native and each
// gradient is reset without a Python bytecode loop around it.
#pragma once

#include <Python.h>

namespace pyparams {

// Runs the body of torch.nn.Module.zero_grad's loop for every item of
// `parameters` (any iterable, typically a native walk), in order:
//   if p.grad is not None:
//       if set_to_none: p.grad = None
//       else: detach_() or requires_grad_(False) on p.grad, then p.grad.zero_()
// The replica warning is the caller's job (it needs the caller's stack level).
// Exact Tensor/Parameter leaves with no torch-function mode active are read
// through LibTorch; everything else (subclasses, non-leaves, modes) through the
// same attribute reads and calls torch's Python loop makes. `set_to_none`'s
// truth is asked for each parameter with a gradient, as torch's `if` does. A
// new reference to None, or nullptr with an error set.
PyObject* zero_grad(PyObject* parameters, PyObject* set_to_none);

}  // namespace pyparams
