// The only pybind11 file: the pyparams._C module and its functions.
#include <torch/extension.h>

#include "collect.h"
#include "iterator.h"
#include "module_attributes.h"
#include "python_names.h"
#include "tensor_flags.h"
#include "walker.h"

namespace py = pybind11;

#define PYPARAMS_STRINGIFY_(x) #x
#define PYPARAMS_STRINGIFY(x) PYPARAMS_STRINGIFY_(x)

namespace {

pyparams::Kind to_kind(int kind) {
  if (kind < 0 || kind > static_cast<int>(pyparams::Kind::Modules)) {
    throw py::value_error("kind must be PARAMETERS, BUFFERS or MODULES, got " +
                          std::to_string(kind));
  }
  return static_cast<pyparams::Kind>(kind);
}

py::object steal_or_throw(PyObject* result) {
  if (result == nullptr) {
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(result);
}

} // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Native walker of torch.nn.Module trees (see the pyparams package for the API).";
  if (!pyparams::init_names() || !pyparams::init_tensor_flags() ||
      !pyparams::init_module_attributes() ||
      !pyparams::add_walk_iterator_type(m.ptr())) {
    throw py::error_already_set();
  }
  m.attr("__version__") = PYPARAMS_STRINGIFY(PYPARAMS_VERSION);
  m.attr("__torch_version__") = PYPARAMS_STRINGIFY(PYPARAMS_TORCH_VERSION);
  m.attr("PARAMETERS") = static_cast<int>(pyparams::Kind::Parameters);
  m.attr("BUFFERS") = static_cast<int>(pyparams::Kind::Buffers);
  m.attr("MODULES") = static_cast<int>(pyparams::Kind::Modules);

  m.def(
      "walk",
      [](py::handle module, int kind, py::handle prefix, bool recurse, bool remove_duplicate,
         bool trainable, bool named) {
        pyparams::WalkOptions options{to_kind(kind), recurse, remove_duplicate, trainable, named};
        return steal_or_throw(pyparams::new_walk_iterator(module.ptr(), prefix.ptr(), options));
      },
      py::arg("module"), py::arg("kind"), py::arg("prefix"), py::arg("recurse"),
      py::arg("remove_duplicate"), py::arg("trainable"), py::arg("named"),
      R"doc(Return a lazy iterator over `module`'s parameters, buffers or modules.

`kind` is PARAMETERS, BUFFERS or MODULES; `named` yields (name, object) pairs
whose names start with `prefix`; `trainable` keeps entries whose requires_grad
is True, read as each is reached.)doc");

  m.def(
      "collect",
      [](py::handle module, int kind, bool recurse, bool remove_duplicate, bool trainable) {
        pyparams::WalkOptions options{to_kind(kind), recurse, remove_duplicate, trainable, false};
        return steal_or_throw(pyparams::collect_list(module.ptr(), options));
      },
      py::arg("module"), py::arg("kind"), py::arg("recurse"), py::arg("remove_duplicate"),
      py::arg("trainable"),
      R"doc(Return a new list of what walk() would yield (unnamed), built in one native call.)doc");
}
