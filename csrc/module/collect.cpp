#include "module/collect.h"

#include "support/owned_ref.h"
#include "support/python_calls.h"

namespace pyparams {

PyObject* collect_list(PyObject* root, const WalkOptions& options) {
  Walker walker;
  if (!walker.start(root, Py_None, options)) {
    return nullptr;
  }
  // The list is made first, with room for one more than the record's length
  // (what an unfiltered replay yields: a replay's run that fills it has not
  // reached the end), and filled in place: appending to a list regrows it a
  // dozen times on a small model, which costs more than a warm walk of it.
  Py_ssize_t hint = walker.length_hint();
  OwnedRef list = OwnedRef::steal(PyList_New(hint >= 0 ? hint + 1 : 64));
  if (!list) {
    return nullptr;
  }
  // Untracked while the walk runs code (a finalizer could find it through
  // gc.get_objects()), and empty: its size counts the items filled in.
  PyObject_GC_UnTrack(list.get());
  auto* items = reinterpret_cast<PyListObject*>(list.get());
  Py_SET_SIZE(items, 0);
  // A replay's steps first, in a row (nothing of ours runs between them),
  // straight into the list's room.
  Walker::ItemSink sink{items->ob_item, items->ob_item + items->allocated};
  bool batched = walker.replay_batch(sink);
  Py_SET_SIZE(items, sink.at - items->ob_item);
  if (!batched) {
    stop_iteration_to_runtime_error();  // as list() of torch's generator raises it
    return nullptr;
  }
  while (PyObject* item = walker.next()) {
    int appended = PyList_Append(list.get(), item);  // grows it past the room if need be
    Py_DECREF(item);
    if (appended < 0) {
      return nullptr;  // `walker` ends the walk as it goes
    }
  }
  if (PyErr_Occurred()) {
    stop_iteration_to_runtime_error();
    return nullptr;
  }
  PyObject_GC_Track(list.get());
  return list.release();
}

}  // namespace pyparams
