// The only pybind11 file: the pyparams._C module and its functions.
#include <pybind11/pybind11.h>

#include <string>
#include <utility>

#include "cache/walk_cache.h"
#include "module/entry_points.h"
#include "module/iterator.h"
#include "module/zero_grad.h"
#include "support/address_table_check.h"
#include "support/python_names.h"
#include "walker/dispatch.h"
#include "walker/memo_hash.h"
#include "walker/module_attributes.h"
#include "walker/tensor_flags.h"
#include "walker/walker.h"

namespace py = pybind11;

#define PYPARAMS_STRINGIFY_(x) #x
#define PYPARAMS_STRINGIFY(x) PYPARAMS_STRINGIFY_(x)

namespace {

pyparams::Method to_method(const std::string& name) {
  pyparams::Method method;
  if (!pyparams::method_named(name.c_str(), method)) {
    throw py::value_error("'" + name + "' is not a walking method of torch.nn.Module");
  }
  return method;
}

py::object steal_or_throw(PyObject* result) {
  if (result == nullptr) {
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(result);
}

}  // namespace

// The torch this file was compiled against, readable in the file's bytes without
// loading it: when loading fails, pyparams/_extension.py tells a torch mismatch apart
// from any other cause by it. `used` keeps it in the binary.
extern "C" [[gnu::used, gnu::visibility("hidden")]] const char pyparams_built_against_torch[] =
    "pyparams-built-against-torch=" PYPARAMS_STRINGIFY(PYPARAMS_TORCH_VERSION);

PYBIND11_MODULE(_C, m) {
  m.doc() = "Native walker of torch.nn.Module trees (see the pyparams package for the API).";
  if (!pyparams::init_names() || !pyparams::init_tensor_flags() || !pyparams::init_memo_hash() ||
      !pyparams::init_module_attributes() || !pyparams::init_dispatch() ||
      !pyparams::init_walk_cache() || !pyparams::add_walk_iterator_type(m.ptr()) ||
      !pyparams::add_entry_points(m.ptr())) {
    throw py::error_already_set();
  }
  m.attr("__version__") = PYPARAMS_STRINGIFY(PYPARAMS_VERSION);
  m.attr("__torch_version__") = PYPARAMS_STRINGIFY(PYPARAMS_TORCH_VERSION);
  m.attr("PARAMETERS") = static_cast<int>(pyparams::Kind::Parameters);
  m.attr("BUFFERS") = static_cast<int>(pyparams::Kind::Buffers);
  m.attr("MODULES") = static_cast<int>(pyparams::Kind::Modules);
  PyObject* chain = pyparams::dispatch_chain_as_dict();
  if (chain == nullptr) {
    throw py::error_already_set();
  }
  m.attr("DISPATCH_CHAIN") = py::reinterpret_steal<py::object>(chain);

  m.def(
      "cache_info",
      []() {
        const pyparams::CacheCounters& counters = pyparams::cache_counters();
        return py::make_tuple(
            counters.hits, counters.misses, counters.invalidations, counters.revalidations,
            pyparams::cache_records(), pyparams::cache_bytes(), pyparams::cache_enabled(),
            counters.dicts_built, counters.dict_bytes, pyparams::cache_off_reason());
      },
      R"doc(Return (hits, misses, invalidations, revalidations, records, bytes, enabled, dicts_built, dict_bytes, off_reason) of the walk cache.)doc");

  m.def(
      "cache_clear",
      []() {
        pyparams::cache_clear();
        pyparams::release_spare_buffers();
      },
      R"doc(Drop every walk record and reset the counters: the next walk of any root is cold.)doc");

  m.def(
      "_spare_buffer_bytes", []() { return pyparams::spare_buffer_bytes(); },
      R"doc(The bytes of the small buffers finished walks keep for the next (cache_clear() frees them). For the tests.)doc");

  m.def(
      "_prefetch_distance",
      [](py::object ops) {
        if (!ops.is_none()) {
          pyparams::set_prefetch_distance(ops.cast<int>());
        }
        return pyparams::prefetch_distance();
      },
      py::arg("ops") = py::none(),
      R"doc(The replay's prefetch distance in ops (set it with `ops`; 0: no prefetching). For measuring.)doc");

  m.def(
      "_straight_replays",
      [](py::object on) {
        if (!on.is_none()) {
          pyparams::set_straight_replays(on.cast<bool>());
        }
        return pyparams::straight_replays();
      },
      py::arg("on") = py::none(),
      R"doc(Whether an eager replay checks its whole record at once first (set it with `on`). For tests.)doc");

  m.def(
      "_address_table_ops",
      [](py::handle ops, bool in_place) {
        return steal_or_throw(pyparams::run_address_table_ops(ops.ptr(), in_place));
      },
      py::arg("ops"), py::arg("in_place"),
      R"doc(Run (op, key) pairs on a fresh address table (the dedup sets' and the cache's); each op's answer. For tests.)doc");

  m.def(
      "register_base_method",
      [](const std::string& name, py::handle function) {
        if (!pyparams::register_base_method(to_method(name), function.ptr())) {
          throw py::error_already_set();
        }
      },
      py::arg("name"), py::arg("function"),
      R"doc(Treat `function`, found on a class under `name`, as torch's base implementation.

For faithful replacements of nn.Module's walking methods (pyparams' patch): the
walk then keeps walking natively where it meets them instead of calling them.)doc");

  m.def(
      "zero_grad",
      [](py::handle parameters, py::handle set_to_none) {
        return steal_or_throw(pyparams::zero_grad(parameters.ptr(), set_to_none.ptr()));
      },
      py::arg("parameters"), py::kw_only(), py::arg("set_to_none") = py::bool_(true),
      R"doc(Reset the gradient of every parameter `parameters` yields, as Module.zero_grad's loop does.

`set_to_none=True` sets each defined `p.grad` to None; False detaches it (or
un-requires its grad) and zeroes it in place. Tensor subclasses and non-leaf
tensors go through Python attribute access, exactly as torch's loop does.)doc");
}
