#include "collect.h"

#include "owned_ref.h"

namespace pyparams {

PyObject* collect_list(PyObject* root, const WalkOptions& options) {
  OwnedRef list = OwnedRef::steal(PyList_New(0));
  if (!list) {
    return nullptr;
  }
  Walker walker;
  if (!walker.start(root, Py_None, options)) {
    return nullptr;
  }
  while (PyObject* item = walker.next()) {
    int appended = PyList_Append(list.get(), item);
    Py_DECREF(item);
    if (appended < 0) {
      return nullptr;
    }
  }
  return PyErr_Occurred() ? nullptr : list.release();
}

}  // namespace pyparams
