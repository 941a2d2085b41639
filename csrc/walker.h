// The native walk over a torch.nn.Module tree: an explicit stack, no recursion.
#pragma once

#include <Python.h>

#include <cstdint>
#include <vector>

#include "item_cursor.h"
#include "owned_ref.h"
#include "pointer_set.h"
#include "pymem_allocator.h"

namespace pyparams {

// What a walk yields: the module's own entries of `_parameters`, of
// `_buffers`, or the modules themselves.
enum class Kind : int { Parameters = 0, Buffers = 1, Modules = 2 };

struct WalkOptions {
  Kind kind = Kind::Parameters;
  bool recurse = true;           // false: the root module's own entries only
  bool remove_duplicate = true;  // torch's memo: each object once
  bool trainable_only = false;   // keep entries whose requires_grad is True
  bool named = false;            // yield (name, object) tuples
};

// Reproduces torch.nn.Module's base-class algorithm (named_modules feeding
// _named_members) step by step, reading each mapping at the moment torch's
// generators would, so mutations made between steps are seen the same way.
// Every object it holds is a strong reference: the model may be dropped by
// its owner while a walk is alive.
class Walker {
 public:
  Walker() = default;
  Walker(const Walker&) = delete;
  Walker& operator=(const Walker&) = delete;
  ~Walker() { clear(); }

  // Prepares a walk of `root` (borrowed). `prefix` (borrowed str) names the
  // root for named walks. False with TypeError when `root` is no nn.Module.
  bool start(PyObject* root, PyObject* prefix, const WalkOptions& options);

  // The next item as a new reference, or nullptr: at the end with no error
  // set, or with an error set. Either way a walk that returned nullptr is
  // finished and keeps returning nullptr, as an exhausted generator does.
  PyObject* next();

  int traverse(visitproc visit, void* arg) const;
  // Drops every reference; the walk becomes finished.
  void clear() noexcept;

 private:
  struct ModuleFrame {
    OwnedRef module;
    OwnedRef name;            // only for named walks
    ItemCursor children;      // over module._modules, started when first needed
    bool children_started = false;
  };

  // 1 with `module` and `name` filled by the next module of the pre-order
  // walk, 0 at its end, -1 with an error set.
  int next_module(OwnedRef& module, OwnedRef& name);
  int descend(PyObject* child, PyObject* key, OwnedRef& module, OwnedRef& name);
  bool start_members(PyObject* module, PyObject* name);
  bool start_children(ModuleFrame& frame);
  bool push(PyObject* module, OwnedRef name);
  void pop();
  // nullptr with an error set, after finishing the walk.
  PyObject* fail() noexcept;
  PyObject* make_item(PyObject* name, PyObject* value) const;
  // Runs pending signal handlers every few steps. They are Python code that
  // may change the tree, so call it before reading an entry, never between
  // reading a borrowed entry and owning it. False with an error set.
  bool poll_signals() {
    if (++steps_since_signal_check_ < kSignalCheckInterval) [[likely]] {
      return true;
    }
    steps_since_signal_check_ = 0;
    return PyErr_CheckSignals() == 0;
  }

  // Walk steps (entries read) between two checks for a pending signal (Ctrl-C).
  static constexpr std::uint32_t kSignalCheckInterval = 1024;

  WalkOptions options_;
  OwnedRef root_;
  OwnedRef root_name_;
  bool root_done_ = false;
  bool finished_ = true;
  std::uint32_t steps_since_signal_check_ = 0;

  std::vector<ModuleFrame, PyMemRawAllocator<ModuleFrame>> stack_;
  ItemCursor members_;      // the current module's _parameters / _buffers
  OwnedRef members_name_;   // that module's name, for named walks
  bool members_active_ = false;

  PointerSet seen_members_{PointerSet::Ownership::Strong};
  PointerSet seen_modules_{PointerSet::Ownership::Strong};
  PointerSet on_stack_{PointerSet::Ownership::Borrowed};  // cycle guard without memo
};

} // namespace pyparams
