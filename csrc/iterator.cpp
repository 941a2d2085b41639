#include "iterator.h"

#include <new>

namespace pyparams {
namespace {

struct WalkIteratorObject {
  PyObject_HEAD
  Walker walker;
  // Set while tp_iternext runs: Python code reached from the walk (a custom
  // mapping's items(), a __del__) must not re-enter the same walk.
  bool running;
};

PyObject* walk_iternext(PyObject* self) {
  auto* iterator = reinterpret_cast<WalkIteratorObject*>(self);
  if (iterator->running) [[unlikely]] {
    PyErr_SetString(PyExc_ValueError, "pyparams iterator already executing");
    return nullptr;
  }
  iterator->running = true;
  PyObject* item = iterator->walker.next();
  iterator->running = false;
  return item;
}

int walk_traverse(PyObject* self, visitproc visit, void* arg) {
  return reinterpret_cast<WalkIteratorObject*>(self)->walker.traverse(visit, arg);
}

int walk_clear(PyObject* self) {
  reinterpret_cast<WalkIteratorObject*>(self)->walker.clear();
  return 0;
}

void walk_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  reinterpret_cast<WalkIteratorObject*>(self)->walker.~Walker();
  Py_TYPE(self)->tp_free(self);
}

PyTypeObject walk_iterator_type = [] {
  PyTypeObject type{PyVarObject_HEAD_INIT(nullptr, 0)};
  type.tp_name = "pyparams._C.WalkIterator";
  type.tp_basicsize = sizeof(WalkIteratorObject);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = PyDoc_STR("Lazy native walk over a torch.nn.Module tree (made by pyparams).");
  type.tp_dealloc = walk_dealloc;
  type.tp_traverse = walk_traverse;
  type.tp_clear = walk_clear;
  type.tp_iter = PyObject_SelfIter;
  type.tp_iternext = walk_iternext;
  return type;
}();

} // namespace

bool add_walk_iterator_type(PyObject* module) {
  if (PyType_Ready(&walk_iterator_type) < 0) {
    return false;
  }
  Py_INCREF(&walk_iterator_type);
  if (PyModule_AddObject(module, "WalkIterator",
                         reinterpret_cast<PyObject*>(&walk_iterator_type)) < 0) {
    Py_DECREF(&walk_iterator_type);
    return false;
  }
  return true;
}

PyObject* new_walk_iterator(PyObject* root, PyObject* prefix, const WalkOptions& options) {
  auto* iterator = PyObject_GC_New(WalkIteratorObject, &walk_iterator_type);
  if (iterator == nullptr) {
    return nullptr;
  }
  new (&iterator->walker) Walker();
  iterator->running = false;
  if (!iterator->walker.start(root, prefix, options)) {
    Py_DECREF(iterator);
    return nullptr;
  }
  PyObject_GC_Track(iterator);
  return reinterpret_cast<PyObject*>(iterator);
}

} // namespace pyparams
