#include "module/iterator.h"

#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

#include "support/delegated_iterator.h"
#include "support/owned_ref.h"
#include "support/python_calls.h"

namespace pyparams {
namespace {

// The object header and the weak references to the iterator, as a generator
// has them (weakref.ref(model.parameters()) works on torch's): a standard
// layout, so that the list's offset is known to the type.
struct WalkIteratorHeader {
  PyObject_HEAD PyObject* weak_references;
};

struct WalkIteratorObject {
  WalkIteratorHeader header;
  Walker walker;
  // Set while tp_iternext runs: Python code reached from the walk (a custom
  // mapping's items(), a __del__) must not re-enter the same walk.
  bool running;
  std::uint8_t steps;  // next() calls, counted up to 2 (send() and throw() ask)
};

// pymalloc serves blocks of up to 512 bytes; a larger iterator would cost a
// system malloc and free on every call. (The GC's header: two words before it.)
// Free-threaded builds allocate every object with mimalloc, which has no such
// limit, and their object header is larger.
#ifndef Py_GIL_DISABLED
static_assert(sizeof(WalkIteratorObject) + 2 * sizeof(void*) <= 512,
              "the walk iterator must stay a small object for pymalloc");
#endif

PyObject* walk_iternext(PyObject* self) {
  auto* iterator = reinterpret_cast<WalkIteratorObject*>(self);
  if (iterator->running) [[unlikely]] {
    PyErr_SetString(PyExc_ValueError, "pyparams iterator already executing");
    return nullptr;
  }
  iterator->running = true;
  if (iterator->steps < 2) [[unlikely]] {
    ++iterator->steps;
  }
  PyObject* item = iterator->walker.next();
  iterator->running = false;
  if (item == nullptr) [[unlikely]] {
    // User code the walk ran (a key's `+`, a requires_grad property, an
    // override called below the root) raised StopIteration: torch's
    // generators raise RuntimeError there, never a silent end.
    stop_iteration_to_runtime_error();
  }
  return item;
}

// Generator protocol, as far as torch's generators are used: close() ends
// the walk and drops every reference; send(None) is next(); throw(exc) ends
// the walk and raises exc, which a generator with no handler does too. Where
// torch's generator waits in a `yield from` on an override's iterator, the
// three are handed to that iterator first (PEP 380; Walker::yield_from_target).

// Runs `call` (which runs user code) as the walk's generator would run it:
// marked executing, so that a next() of the walk from within is refused.
template <typename Call>
auto while_running(WalkIteratorObject* iterator, Call call) {
  bool was_running = std::exchange(iterator->running, true);
  auto result = call();
  iterator->running = was_running;
  return result;
}

// The walk ends before its end (closed, freed, or unwound by an exception
// above the `yield from` that waits on an override's iterator): torch's
// generators close that iterator as they are freed, and what its close()
// raises is unraisable there.
void close_delegated_unraisable(WalkIteratorObject* iterator) {
  while_running(iterator, [&] {
    iterator->walker.close_delegated_unraisable();
    return 0;
  });
}

void end_closing_delegated(WalkIteratorObject* iterator) {
  close_delegated_unraisable(iterator);
  iterator->walker.clear();
}

// An error raised into the delegating frames ends the walk (the iterator
// they waited on is let go of, not closed): nullptr with it set, as the
// frames raise it.
PyObject* unwind(WalkIteratorObject* iterator) {
  PyObject *raised_type, *raised, *raised_traceback;
  PyErr_Fetch(&raised_type, &raised, &raised_traceback);
  iterator->walker.clear();
  PyErr_Restore(raised_type, raised, raised_traceback);
  stop_iteration_to_runtime_error();
  return nullptr;
}

PyObject* walk_close(PyObject* self, PyObject*) {
  auto* iterator = reinterpret_cast<WalkIteratorObject*>(self);
  if (iterator->running) [[unlikely]] {
    PyErr_SetString(PyExc_ValueError, "pyparams iterator already executing");
    return nullptr;
  }
  OwnedRef target = OwnedRef::borrow(iterator->walker.yield_from_target());
  if (!target) {
    end_closing_delegated(iterator);
    Py_RETURN_NONE;
  }
  // gen_close: the iterator closed first; what it raises unwinds the frames,
  // and close() raises it (but a GeneratorExit, which is what close expects).
  if (while_running(iterator, [&] { return close_delegated(target.get()); }) < 0) {
    unwind(iterator);
    if (!PyErr_ExceptionMatches(PyExc_GeneratorExit)) {
      return nullptr;
    }
    PyErr_Clear();
  }
  iterator->walker.clear();
  Py_RETURN_NONE;
}

// A step of the walk where torch's generator resumes after a `yield from`
// (the one that waited on the override's iterator, or one above it): the
// walk's next item, or StopIteration at its end.
PyObject* step_on(WalkIteratorObject* iterator) {
  PyObject* item = walk_iternext(reinterpret_cast<PyObject*>(iterator));
  if (item == nullptr && !PyErr_Occurred()) {
    PyErr_SetNone(PyExc_StopIteration);
  }
  return item;
}

// The `yield from` waiting on `target` ended (StopIteration): the walk goes
// on after it, as the delegating generator does; at its end, StopIteration.
PyObject* resume_after(WalkIteratorObject* iterator, PyObject* target) {
  iterator->walker.end_yield_from(target);
  return step_on(iterator);
}

PyObject* walk_send(PyObject* self, PyObject* value) {
  auto* iterator = reinterpret_cast<WalkIteratorObject*>(self);
  // (A generator closed or thrown into before its first step is no longer
  // just started: it ends with StopIteration, as an exhausted one does.)
  if (value != Py_None && iterator->steps == 0 && !iterator->walker.finished()) {
    PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started generator");
    return nullptr;
  }
  OwnedRef target = OwnedRef::borrow(
      value != Py_None && !iterator->running ? iterator->walker.yield_from_target() : nullptr);
  if (target) [[unlikely]] {
    // `yield from` sends the value on: a generator's send(), else the
    // iterator's own `send` (an AttributeError where it has none).
    PyObject* item = nullptr;
    PySendResult sent =
        while_running(iterator, [&] { return PyIter_Send(target.get(), value, &item); });
    if (sent == PYGEN_NEXT) {
      return item;
    }
    if (sent == PYGEN_ERROR) {
      return unwind(iterator);
    }
    Py_XDECREF(item);  // the `yield from`'s result, which torch drops
    return resume_after(iterator, target.get());
  }
  PyObject* item = walk_iternext(self);
  if (item == nullptr && !PyErr_Occurred()) {
    PyErr_SetNone(PyExc_StopIteration);
  }
  return item;
}

// throw()'s checks of its arguments, in CPython's order (gen_throw; a None
// traceback passed as nullptr): the TypeError's format (its one %s, where it
// has one, the type thrown), or nullptr when they are fine.
const char* invalid_throw(PyObject* type, PyObject* value, PyObject* traceback) {
  if (traceback != nullptr && !PyTraceBack_Check(traceback)) {
    return "throw() third argument must be a traceback object";
  }
  if (PyExceptionClass_Check(type)) {
    return nullptr;
  }
  if (PyExceptionInstance_Check(type)) {
    return value != nullptr && value != Py_None ? "instance exception may not have a separate value"
                                                : nullptr;
  }
  return "exceptions must be classes or instances deriving from BaseException, not %.100s";
}

// The exception throw() raises, made as gen_throw makes it (a class's
// __init__ runs before the frame resumes): never chained to an exception the
// caller is handling (the frame raises it with its own exception state), an
// instance keeping its traceback. Restored as the error set.
void set_thrown(WalkIteratorObject* iterator, PyObject* type, PyObject* value, PyObject* traceback,
                bool frames_running) {
  PyObject* raised_type;
  PyObject* raised;
  PyObject* raised_traceback = nullptr;
  if (PyExceptionInstance_Check(type)) {
    raised_type = Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(type)));
    raised = Py_NewRef(type);
    raised_traceback = traceback != nullptr ? Py_NewRef(traceback) : PyException_GetTraceback(type);
  } else {
    raised_type = Py_NewRef(type);
    raised = Py_XNewRef(value);
    raised_traceback = Py_XNewRef(traceback);
    bool was_running = iterator->running;
    iterator->running = was_running || frames_running;
    PyErr_NormalizeException(&raised_type, &raised, &raised_traceback);
    iterator->running = was_running;
  }
  if (traceback != nullptr && raised != nullptr) {
    PyException_SetTraceback(raised, traceback);
  }
  PyErr_Restore(raised_type, raised, raised_traceback);
}

// _gen_throw could not look up the `throw` of `target` (the error is set):
// the generator that waits on it returns the error untouched. Where that is
// the root's, so does throw(), the walk left as it was; below it, the
// generator above drops it (closing the iterator) and raises the error where
// it waits, which unwinds the frames, or, a StopIteration, ends its own
// `yield from`: the walk goes on after that module.
PyObject* throw_unasked(WalkIteratorObject* iterator, PyObject* target, bool in_root) {
  if (in_root) {
    return nullptr;
  }
  bool returned = PyErr_ExceptionMatches(PyExc_StopIteration);
  if (returned) {
    PyErr_Clear();  // (its value is the `yield from`'s result, which torch drops)
  }
  PyObject *raised_type, *raised, *raised_traceback;
  PyErr_Fetch(&raised_type, &raised, &raised_traceback);  // (dropping runs code)
  while_running(iterator, [&] {
    iterator->walker.drop_delegating_generator(target);
    return 0;
  });
  PyErr_Restore(raised_type, raised, raised_traceback);
  return returned ? step_on(iterator) : unwind(iterator);
}

// throw() where torch's generator waits in a `yield from` on `target`, an
// override's iterator, and the exception is no GeneratorExit: _gen_throw
// hands it to the iterator's throw(), whose item is throw()'s result, whose
// StopIteration ends the `yield from` (the walk goes on), whose error unwinds
// the frames. An iterator without throw() has it raised where it waits.
PyObject* throw_into_target(WalkIteratorObject* iterator, PyObject* target, PyObject* type,
                            PyObject* value, PyObject* traceback_argument) {
  // _gen_throw looks `throw` up before it marks executing the generator that
  // waits on the iterator: only the ones above it are. (Where that is the
  // walk's own, the look-up may step the walk: what follows re-reads it.)
  bool in_root = iterator->walker.yield_from_in_root();
  OwnedRef method;
  int found = in_root ? find_throw(target, method)
                      : while_running(iterator, [&] { return find_throw(target, method); });
  if (found < 0) {
    return throw_unasked(iterator, target, in_root);
  }
  if (found > 0) {
    PyObject* item = nullptr;
    DelegatedThrow thrown = while_running(iterator, [&] {
      return throw_into_delegated(target, method.get(), type, value, traceback_argument, item);
    });
    switch (thrown) {
      case DelegatedThrow::Yielded:
        return item;
      case DelegatedThrow::Returned:
        return resume_after(iterator, target);
      case DelegatedThrow::Raised:
        return unwind(iterator);
    }
  }
  PyObject* traceback = traceback_argument == Py_None ? nullptr : traceback_argument;
  if (const char* invalid = invalid_throw(type, value, traceback)) {
    // Refused by the generator that waits on it: the walk's own stays as it
    // was; one below it leaves the TypeError to unwind the frames above.
    if (!in_root) {
      iterator->walker.clear();
    }
    PyErr_Format(PyExc_TypeError, invalid, Py_TYPE(type)->tp_name);
    return nullptr;
  }
  set_thrown(iterator, type, value, traceback, /*frames_running=*/true);
#if PY_VERSION_HEX >= 0x030C0000
  // From 3.12 on the `yield from` (its CLEANUP_THROW) takes a StopIteration
  // raised where it waits for its result: the walk goes on.
  if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
    PyErr_Clear();
    return resume_after(iterator, target);  // (walk_throw holds it)
  }
#endif
  return unwind(iterator);
}

PyObject* walk_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 3) {
    PyErr_Format(PyExc_TypeError, "throw expected %s, got %zd",
                 nargs < 1 ? "at least 1 argument" : "at most 3 arguments", nargs);
    return nullptr;
  }
#if PY_VERSION_HEX >= 0x030C0000
  if (nargs > 1 &&
      PyErr_WarnEx(PyExc_DeprecationWarning,
                   "the (type, exc, tb) signature of throw() is deprecated, "
                   "use the single-arg signature instead.",
                   1) < 0) {
    return nullptr;
  }
#endif
  auto* iterator = reinterpret_cast<WalkIteratorObject*>(self);
  PyObject* type = args[0];
  PyObject* value = nargs > 1 ? args[1] : nullptr;
  PyObject* traceback_argument = nargs > 2 ? args[2] : nullptr;
  PyObject* traceback = traceback_argument == Py_None ? nullptr : traceback_argument;
  bool exits = PyErr_GivenExceptionMatches(type, PyExc_GeneratorExit);
  OwnedRef target =
      OwnedRef::borrow(iterator->running ? nullptr : iterator->walker.yield_from_target());
  if (target && !exits) {
    return throw_into_target(iterator, target.get(), type, value, traceback_argument);
  }
  // Where torch's generator sits in a `yield from`, the throw goes to the
  // generator it waits on, the outer one marked as executing meanwhile; a
  // GeneratorExit closes that one first (an override's iterator: its
  // close(), whose error unwinds the frames), then is checked and raised here.
  bool delegating =
      !iterator->running && (target || iterator->walker.mirrors_yield_from(iterator->steps));
  bool closes_first = delegating && exits;
  if (closes_first) {
    if (!target) {
      close_delegated_unraisable(iterator);  // (below a `for` loop: freed, it closes)
    } else if (while_running(iterator, [&] { return close_delegated(target.get()); }) < 0) {
      // A generator between ends with its GeneratorExit, closed; else the
      // error unwinds the frames.
      if (iterator->walker.yield_from_in_root() || !PyErr_ExceptionMatches(PyExc_GeneratorExit)) {
        return unwind(iterator);
      }
      PyErr_Clear();
    }
    // (One the walk's own generator waits on stays where it is: should the
    // throw be refused, the walk's next step asks it again.)
    if (!(target && iterator->walker.yield_from_in_root()) &&
        !iterator->walker.close_delegated_generator()) {
      return nullptr;
    }
  }
  if (const char* invalid = invalid_throw(type, value, traceback)) {
    // A generator refuses before it raises anything into its frame, and is
    // left as it was; one suspended in a `yield from` is not: its inner
    // generator refuses, and the TypeError unwinds the outer frames.
    if (delegating && !closes_first) {
      end_closing_delegated(iterator);
    }
    PyErr_Format(PyExc_TypeError, invalid, Py_TYPE(type)->tp_name);
    return nullptr;
  }
  set_thrown(iterator, type, value, traceback, delegating && !closes_first);
  if (iterator->running) [[unlikely]] {
    PyErr_Clear();  // (made, as gen_throw makes it, then refused)
    PyErr_SetString(PyExc_ValueError, "pyparams iterator already executing");
    return nullptr;
  }
  // A generator that has not finished raises the exception from its frame,
  // where PEP 479 turns a StopIteration into RuntimeError. From 3.12 on that
  // is the frame's exception table, which starts after the first RESUME: one
  // never started raises the exception as it is.
  bool in_frame =
      !iterator->walker.finished() && (PY_VERSION_HEX < 0x030C0000 || iterator->steps > 0);
  PyObject *raised_type, *raised, *raised_traceback;
  PyErr_Fetch(&raised_type, &raised, &raised_traceback);  // (ending may run code)
  if (closes_first && target) {
    iterator->walker.clear();  // (closed already; the frames unwinding let go of it)
  } else {
    end_closing_delegated(iterator);
  }
  PyErr_Restore(raised_type, raised, raised_traceback);
  if (in_frame) {
    stop_iteration_to_runtime_error();
  }
  return nullptr;
}

// PEP 424: lets list() size its result once instead of growing it.
PyObject* walk_length_hint(PyObject* self, PyObject*) {
  Py_ssize_t hint = reinterpret_cast<WalkIteratorObject*>(self)->walker.length_hint();
  if (hint < 0) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  return PyLong_FromSsize_t(hint);
}

PyMethodDef walk_methods[] = {
    {"close", walk_close, METH_NOARGS,
     PyDoc_STR("close() -> None. End the walk, drop every reference (closing an override's "
               "iterator torch's generators would close).")},
    {"send", walk_send, METH_O,
     PyDoc_STR("send(None) -> the next item, as next() (another value is ignored once started, as "
               "torch's generators ignore it, or sent on where torch's `yield from` would).")},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(walk_throw)),
     METH_FASTCALL,
     PyDoc_STR(
         "throw(exc) -> ends the walk and raises exc, as a generator without a handler does (or "
         "hands exc to an override's iterator where torch's `yield from` would).")},
    {nullptr, nullptr, 0, nullptr},
};

PyMethodDef sized_walk_methods[] = {
    {"__length_hint__", walk_length_hint, METH_NOARGS,
     PyDoc_STR("An estimate of the items left (known before the first step of a warm walk).")},
    {nullptr, nullptr, 0, nullptr},
};

int walk_traverse(PyObject* self, visitproc visit, void* arg) {
  return reinterpret_cast<WalkIteratorObject*>(self)->walker.traverse(visit, arg);
}

int walk_clear(PyObject* self) {
  reinterpret_cast<WalkIteratorObject*>(self)->walker.clear();
  return 0;
}

// The cyclic GC finalizes a walk it frees, as it does torch's generators
// (before clearing anything): an override's iterator a `yield from` waits on
// is closed.
void walk_finalize(PyObject* self) {
  auto* iterator = reinterpret_cast<WalkIteratorObject*>(self);
  if (!iterator->running && iterator->walker.closed_with_walk() != nullptr) {
    end_closing_delegated(iterator);
  }
}

void walk_dealloc(PyObject* self) {
  auto* iterator = reinterpret_cast<WalkIteratorObject*>(self);
  PyObject_GC_UnTrack(self);
  // Their callbacks run first, the walk still whole (they are user code; they
  // get the dead reference, never the iterator).
  if (iterator->header.weak_references != nullptr) {
    PyObject_ClearWeakRefs(self);
  }
  if (iterator->walker.closed_with_walk() != nullptr) [[unlikely]] {
    end_closing_delegated(iterator);  // (as a generator's finalizer: nothing reaches self)
  }
  iterator->walker.~Walker();
  Py_TYPE(self)->tp_free(self);
}

// The walk iterator's type, with `methods`: both types below are this one.
PyTypeObject walk_iterator_type_with(PyMethodDef* methods) {
  PyTypeObject type{PyVarObject_HEAD_INIT(nullptr, 0)};
  type.tp_name = "pyparams._C.WalkIterator";
  type.tp_basicsize = sizeof(WalkIteratorObject);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_weaklistoffset = offsetof(WalkIteratorHeader, weak_references);
  type.tp_doc = PyDoc_STR("Lazy native walk over a torch.nn.Module tree (made by pyparams).");
  type.tp_dealloc = walk_dealloc;
  type.tp_traverse = walk_traverse;
  type.tp_clear = walk_clear;
  type.tp_finalize = walk_finalize;
  type.tp_iter = PyObject_SelfIter;
  type.tp_iternext = walk_iternext;
  type.tp_methods = methods;
  return type;
}

PyTypeObject walk_iterator_type = walk_iterator_type_with(walk_methods);

// A walk whose record knows it yields more than list() makes room for without
// a hint (8): the same iterator with __length_hint__, so that list() sizes its
// result once. A smaller walk goes without: CPython's hint lookup makes a bound
// method per call, about a tenth of a leaf walk, for no allocation saved.
// Same name, same layout; a subtype, so isinstance() holds for both.
constexpr Py_ssize_t kListRoomWithoutHint = 8;

PyTypeObject sized_walk_iterator_type = [] {
  PyTypeObject type = walk_iterator_type_with(sized_walk_methods);
  type.tp_base = &walk_iterator_type;
  return type;
}();

}  // namespace

bool add_walk_iterator_type(PyObject* module) {
  if (PyType_Ready(&walk_iterator_type) < 0 || PyType_Ready(&sized_walk_iterator_type) < 0) {
    return false;
  }
  Py_INCREF(&walk_iterator_type);
  if (PyModule_AddObject(module, "WalkIterator", reinterpret_cast<PyObject*>(&walk_iterator_type)) <
      0) {
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
  iterator->header.weak_references = nullptr;
  new (&iterator->walker) Walker();
  iterator->running = false;
  iterator->steps = 0;
  if (!iterator->walker.start(root, prefix, options)) {
    Py_DECREF(iterator);
    return nullptr;
  }
  if (PyObject* result = iterator->walker.take_override_result()) {
    Py_DECREF(iterator);
    return result;
  }
  if (iterator->walker.length_hint() > kListRoomWithoutHint) {
    // Not yet tracked or seen by anyone; both types are static (no reference to move).
    Py_SET_TYPE(iterator, &sized_walk_iterator_type);
  }
  PyObject_GC_Track(iterator);
  return reinterpret_cast<PyObject*>(iterator);
}

}  // namespace pyparams
