#include "support/python_calls.h"

namespace pyparams {

bool unpack_pair(PyObject* item, OwnedRef& first, OwnedRef& second) {
  if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) [[likely]] {
    first = OwnedRef::borrow(PyTuple_GET_ITEM(item, 0));
    second = OwnedRef::borrow(PyTuple_GET_ITEM(item, 1));
    return true;
  }
  OwnedRef iterator = OwnedRef::steal(PyObject_GetIter(item));
  if (!iterator) {
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
      PyErr_Format(PyExc_TypeError, "cannot unpack non-iterable %.100s object",
                   Py_TYPE(item)->tp_name);
    }
    return false;
  }
  OwnedRef* targets[2] = {&first, &second};
  for (int index = 0; index < 2; ++index) {
    *targets[index] = OwnedRef::steal(PyIter_Next(iterator.get()));
    if (!*targets[index]) {
      if (!PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 2, got %d)", index);
      }
      return false;
    }
  }
  OwnedRef extra = OwnedRef::steal(PyIter_Next(iterator.get()));
  if (extra) {
#if PY_VERSION_HEX >= 0x030E0000
    // 3.14 names the size of an exact list, tuple or dict.
    if (PyList_CheckExact(item) || PyTuple_CheckExact(item) || PyDict_CheckExact(item)) {
      Py_ssize_t size = PyDict_CheckExact(item) ? PyDict_Size(item) : Py_SIZE(item);
      if (size > 2) {
        PyErr_Format(PyExc_ValueError, "too many values to unpack (expected 2, got %zd)", size);
        return false;
      }
    }
#endif
    PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
    return false;
  }
  return !PyErr_Occurred();
}

OwnedRef proxy_referent(PyObject* proxy) {
#if PY_VERSION_HEX >= 0x030D0000
  PyObject* referent = nullptr;
  if (PyWeakref_GetRef(proxy, &referent) < 0) {
    return OwnedRef();
  }
  OwnedRef alive = OwnedRef::steal(referent);
#else
  PyObject* referent = PyWeakref_GetObject(proxy);  // borrowed; Py_None once dead
  if (referent == nullptr) {
    return OwnedRef();
  }
  OwnedRef alive = referent == Py_None ? OwnedRef() : OwnedRef::borrow(referent);
#endif
  if (!alive) {
    PyErr_SetString(PyExc_ReferenceError, "weakly-referenced object no longer exists");
  }
  return alive;
}

void stop_iteration_to_runtime_error() {
  if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
    return;
  }
  PyObject *raised_type, *raised, *raised_traceback;
  PyErr_Fetch(&raised_type, &raised, &raised_traceback);
  PyErr_NormalizeException(&raised_type, &raised, &raised_traceback);
  if (raised_traceback != nullptr && raised != nullptr) {
    PyException_SetTraceback(raised, raised_traceback);
  }
  Py_XDECREF(raised_type);
  Py_XDECREF(raised_traceback);
  PyErr_SetString(PyExc_RuntimeError, "generator raised StopIteration");
  PyObject *runtime_type, *runtime, *runtime_traceback;
  PyErr_Fetch(&runtime_type, &runtime, &runtime_traceback);
  PyErr_NormalizeException(&runtime_type, &runtime, &runtime_traceback);
  if (raised != nullptr) {
    Py_INCREF(raised);
    PyException_SetCause(runtime, raised);    // steals
    PyException_SetContext(runtime, raised);  // steals
  }
  PyErr_Restore(runtime_type, runtime, runtime_traceback);
}

}  // namespace pyparams
