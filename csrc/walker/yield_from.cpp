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

}  // namespace pyparams
