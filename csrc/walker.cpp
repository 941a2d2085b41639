#include "walker.h"

#include <cstring>
#include <new>
#include <utility>

#include "module_attributes.h"
#include "python_names.h"
#include "script_module.h"
#include "tensor_flags.h"

namespace pyparams {
namespace {

// Frames reserved up front: real models nest a few levels, rarely past 8.
constexpr std::size_t kInitialStackCapacity = 8;

// torch builds every name, even for unnamed walks, so a key that is no str
// fails there with TypeError; so it does here. True when `key` is fine.
bool check_key(PyObject* key, const char* mapping) {
  if (PyUnicode_Check(key)) [[likely]] {
    return true;
  }
  OwnedRef held_key = OwnedRef::borrow(key);  // its repr may run code that drops the entry
  PyErr_Format(PyExc_TypeError, "names in a module's %s must be str, got %.100s: %R", mapping,
               Py_TYPE(key)->tp_name, key);
  return false;
}

// torch's `prefix + ("." if prefix else "") + name`, built in one allocation.
PyObject* join_name(PyObject* prefix, PyObject* key) {
  Py_ssize_t prefix_length = PyUnicode_GET_LENGTH(prefix);
  if (prefix_length == 0) {
    // "" + key is key itself for an exact str, a new exact str for a subclass.
    return PyUnicode_FromObject(key);
  }
  Py_ssize_t key_length = PyUnicode_GET_LENGTH(key);
  Py_UCS4 max_char = PyUnicode_MAX_CHAR_VALUE(prefix);
  if (PyUnicode_MAX_CHAR_VALUE(key) > max_char) {
    max_char = PyUnicode_MAX_CHAR_VALUE(key);
  }
  PyObject* joined = PyUnicode_New(prefix_length + 1 + key_length, max_char);
  if (joined == nullptr) {
    return nullptr;
  }
  if (PyUnicode_KIND(joined) == PyUnicode_1BYTE_KIND) [[likely]] {
    // Module names are ASCII: both parts have the joined string's byte width.
    Py_UCS1* out = PyUnicode_1BYTE_DATA(joined);
    std::memcpy(out, PyUnicode_1BYTE_DATA(prefix), static_cast<std::size_t>(prefix_length));
    out[prefix_length] = '.';
    std::memcpy(out + prefix_length + 1, PyUnicode_1BYTE_DATA(key),
                static_cast<std::size_t>(key_length));
    return joined;
  }
  PyUnicode_CopyCharacters(joined, 0, prefix, 0, prefix_length);
  PyUnicode_WriteChar(joined, prefix_length, '.');
  PyUnicode_CopyCharacters(joined, prefix_length + 1, key, 0, key_length);
  return joined;
}

PyObject* member_attribute(Kind kind) {
  return kind == Kind::Buffers ? names().buffers : names().parameters;
}

// getattr(module, attribute), with an AttributeError that says what is most
// likely wrong: a subclass whose __init__ never called super().__init__().
PyObject* member_mapping(PyObject* module, PyObject* attribute) {
  PyObject* value = module_attribute(module, attribute);
  if (value == nullptr && PyErr_ExceptionMatches(PyExc_AttributeError)) {
    PyErr_Clear();
    PyErr_Format(PyExc_AttributeError,
                 "'%.100s' object has no attribute '%U': was torch.nn.Module.__init__() "
                 "called on it (super().__init__() in its __init__)?",
                 Py_TYPE(module)->tp_name, attribute);
  }
  return value;
}

} // namespace

bool Walker::start(PyObject* root, PyObject* prefix, const WalkOptions& options) {
  clear();
  if (!is_module(root)) {
    PyErr_Format(PyExc_TypeError, "pyparams expected a torch.nn.Module, got %.100s",
                 Py_TYPE(root)->tp_name);
    return false;
  }
  if (options.named && !PyUnicode_Check(prefix)) {
    PyErr_Format(PyExc_TypeError, "prefix must be a str, got %.100s", Py_TYPE(prefix)->tp_name);
    return false;
  }
  options_ = options;
  if (options_.kind == Kind::Modules) {
    options_.recurse = true;
    options_.trainable_only = false;
  }
  root_ = OwnedRef::borrow(root);
  if (options.named) {
    root_name_ = OwnedRef::borrow(prefix);
  }
  root_done_ = false;
  finished_ = false;
  if (options_.recurse) {
    try {
      stack_.reserve(kInitialStackCapacity);
    } catch (const std::bad_alloc&) {
      PyErr_NoMemory();
      fail();
      return false;
    }
  }
  return true;
}

PyObject* Walker::next() {
  if (finished_) {
    return nullptr;
  }
  try {
    for (;;) {
      if (members_active_) {
        if (!poll_signals()) {
          return fail();
        }
        PyObject* key;
        PyObject* value;
        int found = members_.next(key, value);
        if (found < 0) {
          return fail();
        }
        if (found > 0) {
          if (value == Py_None) {
            continue;
          }
          if (options_.remove_duplicate) {
            int added = seen_members_.insert(value);
            if (added < 0) {
              return fail();
            }
            if (added == 0) {
              continue;
            }
          }
          if (!check_key(key, options_.kind == Kind::Buffers ? "_buffers" : "_parameters")) {
            return fail();
          }
          // From here Python code may run (requires_grad of a subclass):
          // hold what is still needed.
          OwnedRef held_value = OwnedRef::borrow(value);
          OwnedRef held_key = OwnedRef::borrow(options_.named ? key : nullptr);
          if (options_.trainable_only) {
            int trainable = requires_grad(value);
            if (trainable < 0) {
              return fail();
            }
            if (trainable == 0) {
              continue;
            }
          }
          if (!options_.named) {
            return held_value.release();
          }
          OwnedRef name = OwnedRef::steal(join_name(members_name_.get(), held_key.get()));
          if (!name) {
            return fail();
          }
          PyObject* item = make_item(name.get(), value);
          return item != nullptr ? item : fail();
        }
        members_active_ = false;
        members_name_.reset();
      }

      OwnedRef module;
      OwnedRef name;
      int found = next_module(module, name);
      if (found < 0) {
        return fail();
      }
      if (found == 0) {
        clear();
        return nullptr;
      }
      if (options_.kind == Kind::Modules) {
        if (!options_.named) {
          return module.release();
        }
        PyObject* item = make_item(name.get(), module.get());
        return item != nullptr ? item : fail();
      }
      if (!start_members(module.get(), name.get())) {
        return fail();
      }
    }
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
    return fail();
  }
}

int Walker::next_module(OwnedRef& module, OwnedRef& name) {
  if (!root_done_) {
    root_done_ = true;
    if (options_.remove_duplicate && seen_modules_.insert(root_.get()) < 0) {
      return -1;
    }
    module = OwnedRef::borrow(root_.get());
    name = OwnedRef::borrow(root_name_.get());
    if (options_.recurse && !push(root_.get(), OwnedRef::borrow(root_name_.get()))) {
      return -1;
    }
    return 1;
  }
  while (!stack_.empty()) {
    // Signal handlers run Python code that may change the tree: check before
    // reading an entry, never between reading a borrowed entry and owning it.
    if (!poll_signals()) {
      return -1;
    }
    ModuleFrame& top = stack_.back();
    if (!top.children_started && !start_children(top)) {
      return -1;
    }
    PyObject* key;
    PyObject* child;
    int found = top.children.next(key, child);
    if (found < 0) {
      return -1;
    }
    if (found == 0) {
      pop();
      continue;
    }
    if (child == Py_None) {
      continue;
    }
    if (!check_key(key, "_modules")) {
      return -1;
    }
    int descended = descend(child, key, module, name);
    if (descended != 0) {
      return descended;
    }
  }
  return 0;
}

// Enters `child` (reached under `key` of the top frame): 1 when it is the next
// module, 0 when it is skipped as a duplicate, -1 with an error set.
int Walker::descend(PyObject* child, PyObject* key, OwnedRef& module, OwnedRef& name) {
  if (!is_module(child)) {
    PyErr_Format(PyExc_AttributeError,
                 "_modules[%R] of '%.100s' holds a '%.100s', not a torch.nn.Module", key,
                 Py_TYPE(stack_.back().module.get())->tp_name, Py_TYPE(child)->tp_name);
    return -1;
  }
  if (options_.remove_duplicate) {
    int added = seen_modules_.insert(child);
    if (added <= 0) {
      return added;
    }
  } else if (on_stack_.contains(child)) {
    PyErr_Format(PyExc_RuntimeError,
                 "module graph has a cycle: '%.100s' under key %R contains itself; "
                 "remove_duplicate=False would walk it forever",
                 Py_TYPE(child)->tp_name, key);
    return -1;
  }
  OwnedRef child_name;
  if (options_.named) {
    child_name = OwnedRef::steal(join_name(stack_.back().name.get(), key));
    if (!child_name) {
      return -1;
    }
  }
  module = OwnedRef::borrow(child);
  name = OwnedRef::borrow(child_name.get());
  if (!push(child, std::move(child_name))) {
    return -1;
  }
  return 1;
}

bool Walker::start_members(PyObject* module, PyObject* name) {
  OwnedRef mapping = OwnedRef::steal(member_mapping(module, member_attribute(options_.kind)));
  if (!mapping) {
    return false;
  }
  if (PyDict_CheckExact(mapping.get())) [[likely]] {
    if (!members_.start(mapping.get())) {
      return false;
    }
  } else {
    // TorchScript keeps members in C++; everything else is a Python mapping.
    int scripted = is_script_module(module);
    if (scripted < 0) {
      return false;
    }
    if (scripted) {
      OwnedRef pairs = OwnedRef::steal(
          script_module_members(module, options_.kind == Kind::Buffers));
      if (!pairs || !members_.start_pairs(pairs.get())) {
        return false;
      }
    } else if (!members_.start(mapping.get())) {
      return false;
    }
  }
  members_name_ = OwnedRef::borrow(name);
  members_active_ = true;
  return true;
}

bool Walker::start_children(ModuleFrame& frame) {
  frame.children_started = true;
  OwnedRef mapping = OwnedRef::steal(member_mapping(frame.module.get(), names().modules));
  return mapping && frame.children.start(mapping.get());
}

bool Walker::push(PyObject* module, OwnedRef name) {
  if (!options_.remove_duplicate && on_stack_.insert(module) < 0) {
    return false;
  }
  ModuleFrame& frame = stack_.emplace_back();
  frame.module = OwnedRef::borrow(module);
  frame.name = std::move(name);
  return true;
}

void Walker::pop() {
  // Move the frame out first: dropping its references may run a __del__,
  // which must find the stack already consistent.
  ModuleFrame done = std::move(stack_.back());
  stack_.pop_back();
  if (!options_.remove_duplicate) {
    on_stack_.erase(done.module.get());
  }
}

PyObject* Walker::make_item(PyObject* name, PyObject* value) const {
  PyObject* item = PyTuple_New(2);
  if (item != nullptr) {
    Py_INCREF(name);
    Py_INCREF(value);
    PyTuple_SET_ITEM(item, 0, name);
    PyTuple_SET_ITEM(item, 1, value);
  }
  return item;
}

PyObject* Walker::fail() noexcept {
  // Releasing references may run arbitrary code; keep the error aside meanwhile.
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  clear();
  PyErr_Restore(type, value, traceback);
  return nullptr;
}

void Walker::clear() noexcept {
  finished_ = true;
  members_active_ = false;
  members_.reset();
  members_name_.reset();
  while (!stack_.empty()) {
    ModuleFrame done = std::move(stack_.back());
    stack_.pop_back();
  }
  stack_.shrink_to_fit();
  on_stack_.clear();
  seen_members_.clear();
  seen_modules_.clear();
  root_.reset();
  root_name_.reset();
}

int Walker::traverse(visitproc visit, void* arg) const {
  Py_VISIT(root_.get());
  Py_VISIT(root_name_.get());
  Py_VISIT(members_name_.get());
  if (int error = members_.traverse(visit, arg)) {
    return error;
  }
  for (const ModuleFrame& frame : stack_) {
    Py_VISIT(frame.module.get());
    Py_VISIT(frame.name.get());
    if (int error = frame.children.traverse(visit, arg)) {
      return error;
    }
  }
  if (int error = seen_members_.traverse(visit, arg)) {
    return error;
  }
  return seen_modules_.traverse(visit, arg);
}

} // namespace pyparams
