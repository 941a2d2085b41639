#include "module/collect.h"

#include <new>

#include "support/owned_ref.h"

namespace pyparams {
namespace {

// The items gathered so far: strong references, dropped unless handed to the list.
struct Gathered {
  RawVector<PyObject*> items;
  ~Gathered() {
    for (PyObject* item : items) {
      Py_DECREF(item);
    }
  }
};

}  // namespace

PyObject* collect_list(PyObject* root, const WalkOptions& options) {
  Walker walker;
  if (!walker.start(root, Py_None, options)) {
    return nullptr;
  }
  // Gathered first, then the list made once at its size: appending to a list
  // regrows it a dozen times on a small model, which costs more than a warm walk
  // of it. A replay knows its length before its first step.
  Gathered gathered;
  try {
    // One more than the record's length (what an unfiltered replay yields):
    // a replay batch that fills it has not reached the walk's end.
    Py_ssize_t hint = walker.length_hint();
    gathered.items.reserve(hint >= 0 ? static_cast<std::size_t>(hint) + 1 : 64);
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
  // A replay's steps first, in a row (nothing of ours runs between them), into
  // the room reserved.
  std::size_t room = gathered.items.capacity();
  gathered.items.resize(room);  // reserved: no allocation, nothing thrown
  Walker::ItemSink sink{gathered.items.data(), gathered.items.data() + room};
  bool batched = walker.replay_batch(sink);
  gathered.items.resize(static_cast<std::size_t>(sink.at - gathered.items.data()));
  if (!batched) {
    return nullptr;
  }
  while (PyObject* item = walker.next()) {
    try {
      gathered.items.push_back(item);
    } catch (const std::bad_alloc&) {
      Py_DECREF(item);
      return PyErr_NoMemory();  // `walker` ends the walk as it goes
    }
  }
  if (PyErr_Occurred()) {
    return nullptr;
  }
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(gathered.items.size()));
  if (list == nullptr) {
    return nullptr;
  }
  for (std::size_t index = 0; index < gathered.items.size(); ++index) {
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(index), gathered.items[index]);
  }
  gathered.items.clear();  // the list owns them now
  return list;
}

}  // namespace pyparams
