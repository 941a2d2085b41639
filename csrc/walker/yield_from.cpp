// PEP 380's side of the walker: the override's iterator torch's generators
// wait on in a `yield from` (Walker::yield_from_target, closed_with_walk).
#include "support/delegated_iterator.h"
#include "walker/walker.h"

namespace pyparams {

void Walker::close_delegated_unraisable() {
  if (PyObject* delegated = closed_with_walk()) {
    close_delegated_as_freed(delegated);  // (it holds its own reference while it runs)
  }
}

void Walker::end_yield_from(PyObject* target) {
  if (target == nullptr || closed_with_walk() != target) {
    return;
  }
  if (phase_ == Phase::Delegated) {
    clear();
  } else {
    pop();
  }
}

void Walker::drop_delegating_generator(PyObject* target) {
  if (target == nullptr || closed_with_walk() != target || yield_from_in_root()) {
    return;
  }
  close_delegated_unraisable();
  // The frames of the override's module and of the module whose generator
  // waited on it (re-proven: its close() ran code).
  if (closed_with_walk() == target) {
    pop();
    if (live_.stack.size() > 1) {
      pop();
    }
  }
}

}  // namespace pyparams
