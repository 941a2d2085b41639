#include "walker/script_module.h"

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/python/module_python.h>

#include <exception>
#include <string>

#include "support/owned_ref.h"
#include "support/python_names.h"

namespace pyparams {
namespace {

// Appends (name, wrapped tensor) for every named slot; false with an error set.
template <typename NamedSlots>
bool append_pairs(PyObject* list, NamedSlots slots) {
  for (const auto& slot : slots) {
    OwnedRef name = OwnedRef::steal(
        PyUnicode_FromStringAndSize(slot.name.data(), static_cast<Py_ssize_t>(slot.name.size())));
    if (!name) {
      return false;
    }
    OwnedRef tensor = OwnedRef::steal(THPVariable_Wrap(slot.value));
    if (!tensor) {
      return false;
    }
    OwnedRef pair = OwnedRef::steal(PyTuple_Pack(2, name.get(), tensor.get()));
    if (!pair || PyList_Append(list, pair.get()) < 0) {
      return false;
    }
  }
  return true;
}

}  // namespace

int is_script_module(PyObject* object) {
  // The type's MRO only, like is_module: no __instancecheck__, no user code.
  return PyType_IsSubtype(Py_TYPE(object),
                          reinterpret_cast<PyTypeObject*>(names().script_module_class));
}

PyObject* script_module_members(PyObject* script_module, bool buffers) {
  try {
    std::optional<torch::jit::Module> module =
        torch::jit::as_module(pybind11::handle(script_module));
    if (!module) {
      PyErr_Format(PyExc_TypeError, "expected a torch.jit.ScriptModule, got %.100s",
                   Py_TYPE(script_module)->tp_name);
      return nullptr;
    }
    OwnedRef list = OwnedRef::steal(PyList_New(0));
    if (!list) {
      return nullptr;
    }
    bool ok = buffers ? append_pairs(list.get(), module->named_buffers(/*recurse=*/false))
                      : append_pairs(list.get(), module->named_parameters(/*recurse=*/false));
    return ok ? list.release() : nullptr;
  } catch (pybind11::error_already_set& error) {
    error.restore();
  } catch (const std::exception& error) {
    PyErr_Format(PyExc_RuntimeError, "reading a TorchScript module failed: %s", error.what());
  }
  return nullptr;
}

}  // namespace pyparams
