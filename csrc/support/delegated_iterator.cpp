#include "support/delegated_iterator.h"

#include "support/owned_ref.h"
#include "support/python_calls.h"
#include "support/python_names.h"

namespace pyparams {
namespace {

// `object.<name>`, or nothing (no error) where it has no such attribute.
// -1 with an error set where the look-up raised something else.
int optional_attribute(PyObject* object, PyObject* name, OwnedRef& found) {
  PyObject* attribute = nullptr;
#if PY_VERSION_HEX >= 0x030D0000
  int result = PyObject_GetOptionalAttr(object, name, &attribute);
#else
  int result = _PyObject_LookupAttr(object, name, &attribute);
#endif
  found = OwnedRef::steal(attribute);
  return result;
}

#if PY_VERSION_HEX >= 0x030C0000
// From 3.12 on a generator's throw() warns when given (type, value,
// traceback); CPython hands its inner generator the three without a warning.
// The same exception as one instance reaches it the same way, unwarned.
// nullptr (no error set) where the three are no valid exception: the inner
// generator then refuses them itself.
PyObject* as_one_exception(PyObject* type, PyObject* value, PyObject* traceback) {
  if (traceback == Py_None) {
    traceback = nullptr;
  }
  if (traceback != nullptr && !PyTraceBack_Check(traceback)) {
    return nullptr;
  }
  if (PyExceptionInstance_Check(type)) {
    if (value != nullptr && value != Py_None) {
      return nullptr;
    }
    if (traceback != nullptr) {
      PyException_SetTraceback(type, traceback);
    }
    return Py_NewRef(type);
  }
  if (!PyExceptionClass_Check(type)) {
    return nullptr;
  }
  // As the inner generator makes it: an __init__ that raises makes its own
  // error the exception thrown.
  PyObject* raised_type = Py_NewRef(type);
  PyObject* raised = Py_XNewRef(value);
  PyObject* raised_traceback = Py_XNewRef(traceback);
  PyErr_NormalizeException(&raised_type, &raised, &raised_traceback);
  if (raised_traceback != nullptr && raised != nullptr) {
    PyException_SetTraceback(raised, raised_traceback);
  }
  Py_XDECREF(raised_type);
  Py_XDECREF(raised_traceback);
  return raised;
}
#endif

PyObject* call_throw(PyObject* method, PyObject* type, PyObject* value, PyObject* traceback) {
  // PyObject_CallFunctionObjArgs stops at the first NULL, as CPython's call does.
  return PyObject_CallFunctionObjArgs(method, type, value, traceback, nullptr);
}

}  // namespace

int close_delegated(PyObject* iterator) {
  OwnedRef close;
  if (optional_attribute(iterator, names().close, close) < 0) {
    PyErr_WriteUnraisable(iterator);
  }
  if (!close) {
    return 0;
  }
  OwnedRef result = OwnedRef::steal(PyObject_CallNoArgs(close.get()));
  return result ? 0 : -1;
}

void close_delegated_as_freed(PyObject* iterator) {
  OwnedRef held = OwnedRef::borrow(iterator);
  PyObject *pending_type, *pending, *pending_traceback;
  PyErr_Fetch(&pending_type, &pending, &pending_traceback);
  if (close_delegated(iterator) < 0) {
    stop_iteration_to_runtime_error();
    if (PyErr_ExceptionMatches(PyExc_GeneratorExit)) {
      PyErr_Clear();
    } else {
      PyErr_WriteUnraisable(iterator);
    }
  }
  PyErr_Restore(pending_type, pending, pending_traceback);
}

int find_throw(PyObject* iterator, OwnedRef& method) {
  // (A generator's own throw is found without running any code.)
  return optional_attribute(iterator, names().throw_, method);
}

DelegatedThrow throw_into_delegated(PyObject* iterator, PyObject* method, PyObject* type,
                                    PyObject* value, PyObject* traceback, PyObject*& item) {
#if PY_VERSION_HEX >= 0x030C0000
  if (PyGen_CheckExact(iterator) && value != nullptr) {
    OwnedRef single = OwnedRef::steal(as_one_exception(type, value, traceback));
    item = single ? PyObject_CallOneArg(method, single.get())
                  : call_throw(method, type, value, traceback);
  } else {
    item = call_throw(method, type, value, traceback);
  }
#else
  item = call_throw(method, type, value, traceback);
#endif
  if (item != nullptr) {
    return DelegatedThrow::Yielded;
  }
  if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
    PyErr_Clear();  // (its value is the `yield from`'s result, which torch drops)
    return DelegatedThrow::Returned;
  }
  return DelegatedThrow::Raised;
}

}  // namespace pyparams
