#include "walker/walker.h"

#include <new>
#include <utility>

#include "cache/replay_program.h"
#include "support/python_names.h"
#include "walker/dispatch.h"
#include "walker/dotted_names.h"
#include "walker/module_attributes.h"
#include "walker/script_module.h"
#include "walker/tensor_flags.h"

namespace pyparams {
namespace {

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

// Python's `first, second = item`, with its error messages. False with an error set.
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
    PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
    return false;
  }
  return !PyErr_Occurred();
}

// kwargs[name] = value for a keyword torch passes. False with an error set.
bool set_keyword(PyObject* kwargs, const char* name, PyObject* value) {
  return PyDict_SetItemString(kwargs, name, value) == 0;
}

PyObject* as_bool(bool value) {
  return value ? Py_True : Py_False;
}

// getattr(module, attribute), with an AttributeError that says what is most
// likely wrong: a subclass whose __init__ never called super().__init__().
PyObject* member_mapping(PyObject* module, PyObject* attribute, bool* from_dict = nullptr) {
  PyObject* value = module_attribute(module, attribute, from_dict);
  if (value == nullptr && PyErr_ExceptionMatches(PyExc_AttributeError)) {
    PyErr_Clear();
    PyErr_Format(PyExc_AttributeError,
                 "'%.100s' object has no attribute '%U': was torch.nn.Module.__init__() "
                 "called on it (super().__init__() in its __init__)?",
                 Py_TYPE(module)->tp_name, attribute);
  }
  return value;
}

}  // namespace

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
  if (!options_.named) {
    mirrored_level_ = Dispatch::Public;
  } else {
    mirrored_level_ = options_.kind == Kind::Modules ? Dispatch::NamedModules : Dispatch::Named;
  }
  if (options_.kind == Kind::Modules) {
    options_.recurse = true;
    options_.trainable_only = false;
  } else if (options_.dispatch == Dispatch::Public && !options_.remove_duplicate) {
    // parameters()/buffers() take no remove_duplicate: with False the walk is
    // `(p for _, p in m.named_parameters(recurse=..., remove_duplicate=False))`,
    // whose named_parameters is called at once. (The patch's parameters(),
    // which starts at named_parameters itself, is a generator: it asks at the
    // first next().)
    options_.dispatch = Dispatch::Named;
    mirrored_level_ = Dispatch::Named;
  }
  next_level_ = options_.dispatch;
  root_ = OwnedRef::borrow(root);
  // Unnamed walks still know torch's default prefix "": an override gets names.
  root_name_ = options_.named ? OwnedRef::borrow(prefix)
                              : OwnedRef::steal(PyUnicode_FromStringAndSize("", 0));
  if (!root_name_) {
    fail();
    return false;
  }
  root_done_ = false;
  root_dispatched_ = false;
  finished_ = false;
  record_slot_ =
      record_slot(static_cast<int>(options_.kind), options_.recurse, options_.remove_duplicate);
  // The user's own call `m.X(...)` runs an override of X at once; torch's
  // generators reach the deeper methods at the first next().
  if (options_.dispatch == mirrored_level_) {
    if (root_overrides_ruled_out()) {
      next_level_ = next_level(next_level_);  // checked: none
    } else if (!dispatch_root(/*mirrored_only=*/true)) {
      fail();
      return false;
    }
  }
  return true;
}

// The first step of a walk, and every step of a live one.
PyObject* Walker::next_unreplayed() {
  if (finished_) {
    return nullptr;
  }
  try {
    // The first step readies the walk (the root's overrides, then the cache).
    if (!root_done_) {
      if (!root_dispatched_) {
        root_dispatched_ = true;
        if (root_overrides_ruled_out()) {
          next_level_ = Dispatch::Children;  // every level checked: none
        } else if (!dispatch_root(/*mirrored_only=*/false)) {
          return fail();
        }
      }
      if (delegated_ != Delegated::None) [[unlikely]] {
        return next_delegated();
      }
      // (An overriding named_modules at the root has entered it already.)
      if (!root_done_ && !begin_cached_walk()) {
        return fail();
      }
      if (replay_) {
        return next();
      }
    }
    for (;;) {
      if (members_active_) {
        PyObject* item;
        int found = next_member(item);
        if (found < 0) {
          return fail();
        }
        if (found > 0) {
          return item;
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
        if (recording_) {
          finish_recording();
        } else if (counting_) {
          note_walk_size(root_.get(), modules_entered_);
        }
        clear();
        return nullptr;
      }
      if (options_.kind == Kind::Modules) {
        if (override_item_) [[unlikely]] {
          // torch's `yield from module.named_modules(...)`: the override's own items.
          return options_.named ? override_item_.release() : module.release();
        }
        if (!options_.named) {
          return module.release();
        }
        PyObject* item = make_item(name.get(), module.get());
        return item != nullptr ? item : fail();
      }
      bool from_override = static_cast<bool>(override_item_);
      override_item_.reset();
      if (!start_members(module.get(), name.get(), from_override)) {
        return fail();
      }
    }
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
    return fail();
  }
}

int Walker::next_member(PyObject*& item) {
  const char* mapping = options_.kind == Kind::Buffers ? "_buffers" : "_parameters";
  for (;;) {
    if (!poll_signals()) {
      return -1;
    }
    PyObject* key;
    PyObject* value;
    int found = members_.next(key, value);
    if (found <= 0) {
      return found;
    }
    if (recording_) {
      recording_->members.push_back({key, value, members_.position()});
      ++recording_->modules[members_record_].member_count;
    }
    if (value == Py_None) {
      continue;
    }
    if (options_.remove_duplicate) {
      int added = seen_members_.insert(value);
      if (added <= 0) {
        if (added < 0) {
          return -1;
        }
        continue;
      }
    }
    if (recording_) {
      if (!PyUnicode_CheckExact(key)) [[unlikely]] {
        abandon_recording();  // a str subclass's `+` is user code: a replay could not name it
      } else {
        recording_->members.back().yielded = true;  // a first occurrence: replay yields it
      }
    }
    if (!check_key(key, mapping)) {
      return -1;
    }
    // From here Python code may run (requires_grad of a subclass, a name
    // joined with `+`): hold what is still needed.
    OwnedRef held_value = OwnedRef::borrow(value);
    OwnedRef held_key = OwnedRef::borrow(options_.named || members_generic_name_ ? key : nullptr);
    OwnedRef name;
    if (members_generic_name_) [[unlikely]] {
      // torch builds the name before anyone sees the item, unnamed walks too.
      name = OwnedRef::steal(join_name_generic(members_name_.get(), held_key.get()));
      if (!name) {
        return -1;
      }
    }
    if (options_.trainable_only) {
      int trainable = requires_grad(held_value.get());
      if (trainable <= 0) {
        if (trainable < 0) {
          return -1;
        }
        continue;
      }
    }
    if (!options_.named) {
      item = held_value.release();
      return 1;
    }
    if (!name) {
      name = OwnedRef::steal(join_name_generic(members_name_.get(), held_key.get()));
      if (!name) {
        return -1;
      }
    }
    item = make_item(name.get(), held_value.get());
    return item != nullptr ? 1 : -1;
  }
}

int Walker::next_module(OwnedRef& module, OwnedRef& name) {
  override_item_.reset();
  if (!root_done_) {
    root_done_ = true;
    modules_entered_ = 1;
    if (options_.remove_duplicate && seen_modules_.insert(root_.get()) < 0) {
      return -1;
    }
    module = OwnedRef::borrow(root_.get());
    name = OwnedRef::borrow(options_.named ? root_name_.get() : nullptr);
    if (options_.recurse &&
        !push(root_.get(), OwnedRef::borrow(options_.named ? root_name_.get() : nullptr))) {
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
    if (top.overridden) [[unlikely]] {
      int found = next_overridden(top, module, name);
      if (found != 0) {
        return found;
      }
      pop();
      continue;
    }
    if (!top.children_started && !start_children(top)) {
      return -1;
    }
    PyObject* key;
    PyObject* child;
    int found = top.children.next(key, child);
    if (recording_ && found > 0) {
      const ModuleRecord& record = recording_->modules[top.record];
      recording_->children[record.first_child + top.entries_read++] = {key, child,
                                                                       top.children.position()};
    }
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
    int descended = descend(OwnedRef::borrow(child), OwnedRef::borrow(key), module, name);
    if (descended != 0) {
      return descended;
    }
  }
  return 0;
}

// The next (name, module) item of an overriding named_modules: 1 with
// `module`, `name` and override_item_ set, 0 at its end, -1 with an error set.
int Walker::next_overridden(ModuleFrame& frame, OwnedRef& module, OwnedRef& name) {
  OwnedRef item = OwnedRef::steal(PyIter_Next(frame.overridden.get()));
  if (!item) {
    return PyErr_Occurred() ? -1 : 0;
  }
  // torch's named_modules passes the items on as they are (`yield from`); its
  // callers unpack them (`for name, module in ...`).
  bool passed_on = options_.kind == Kind::Modules && options_.named;
  if (!passed_on && !unpack_pair(item.get(), name, module)) {
    return -1;
  }
  override_item_ = std::move(item);
  return 1;
}

// Enters `child` (reached under `key` of the top frame): 1 when it is the next
// module, 0 when it is skipped as a duplicate or handed to an override, -1
// with an error set.
int Walker::descend(OwnedRef child, OwnedRef key, OwnedRef& module, OwnedRef& name) {
  if (!is_module(child.get())) [[unlikely]] {
    // torch calls `child.named_modules(...)` on whatever the dict holds: an
    // object that has one supplies the subtree; one without raises there.
    OwnedRef method =
        OwnedRef::steal(PyObject_GetAttr(child.get(), method_name(Method::NamedModules)));
    if (!method) {
      return -1;
    }
    return call_named_modules_override(method.get(), std::move(child), std::move(key));
  }
  // Recording: the child's versions are taken before the reads they vouch
  // for (its override check, here, may run code that changes it).
  std::uint32_t entered_before = last_entered_;
  // (A key that is no exact str would name the frame with its own `+`, user
  // code a replay cannot run: such a tree is walked live.)
  if (recording_ && (!PyUnicode_CheckExact(key.get()) || !record_enter(child.get()))) {
    abandon_recording();
  }
  bool recorded = static_cast<bool>(recording_);
  // A duplicate is no module the record entered: its ModuleRecord goes.
  auto unrecord = [&]() {
    if (recorded && recording_) {
      recording_->modules.pop_back();
      last_entered_ = entered_before;
    }
  };
  // torch calls `child.named_modules(memo, prefix, remove_duplicate)` here.
  OwnedRef override = OwnedRef::steal(override_for(child.get(), Method::NamedModules));
  if (override) [[unlikely]] {
    return call_named_modules_override(override.get(), std::move(child), std::move(key));
  }
  if (PyErr_Occurred()) {
    return -1;
  }
  if (memo_) [[unlikely]] {
    int present = PySet_Contains(memo_.get(), child.get());
    if (present != 0) {
      unrecord();
      return present < 0 ? -1 : 0;
    }
    if (options_.remove_duplicate && PySet_Add(memo_.get(), child.get()) < 0) {
      return -1;
    }
  } else if (options_.remove_duplicate) {
    int added = seen_modules_.insert(child.get());
    if (added <= 0) {
      unrecord();
      return added;
    }
  }
  if (!options_.remove_duplicate && on_stack_.contains(child.get())) {
    PyErr_Format(PyExc_RuntimeError,
                 "module graph has a cycle: '%.100s' under key %R contains itself; "
                 "remove_duplicate=False would walk it forever",
                 Py_TYPE(child.get())->tp_name, key.get());
    return -1;
  }
  OwnedRef frame_label;
  if (options_.named) {
    frame_label = OwnedRef::steal(join_name_generic(stack_.back().name.get(), key.get()));
    if (!frame_label) {
      return -1;
    }
    name = OwnedRef::borrow(frame_label.get());
  } else {
    frame_label = std::move(key);  // the frame keeps its key; names are built on demand
  }
  if (recording_) {
    ModuleFrame& parent = stack_.back();
    EntryRecord& entry =
        recording_
            ->children[recording_->modules[parent.record].first_child + parent.entries_read - 1];
    entry.entered = static_cast<std::int32_t>(recording_->modules.size() - 1);
  }
  ++modules_entered_;
  module = OwnedRef::borrow(child.get());
  if (!push(child.get(), std::move(frame_label))) {
    return -1;
  }
  return 1;
}

// Calls an overriding `child.named_modules(memo, prefix, remove_duplicate)`
// and stacks its items in place of the child's subtree. 0, or -1 with an error set.
int Walker::call_named_modules_override(PyObject* callable, OwnedRef child, OwnedRef key) {
  abandon_recording();  // what an override yields is no dict a version could vouch for
  if (!ensure_memo()) {
    return -1;
  }
  OwnedRef parent_name = OwnedRef::steal(frame_name(stack_.size() - 1));
  if (!parent_name) {
    return -1;
  }
  OwnedRef prefix = OwnedRef::steal(join_name_generic(parent_name.get(), key.get()));
  if (!prefix) {
    return -1;
  }
  OwnedRef result = OwnedRef::steal(PyObject_CallFunctionObjArgs(
      callable, memo_.get(), prefix.get(), as_bool(options_.remove_duplicate), nullptr));
  if (!result) {
    return -1;
  }
  OwnedRef items = OwnedRef::steal(PyObject_GetIter(result.get()));
  if (!items) {
    return -1;
  }
  return push(child.get(), std::move(prefix), std::move(items)) ? 0 : -1;
}

// The name torch gives the module of stack_[depth]: stored by named walks,
// joined from the frames' keys by unnamed ones. A new reference.
PyObject* Walker::frame_name(std::size_t depth) const {
  if (options_.named || stack_[depth].overridden) {
    PyObject* stored = stack_[depth].name.get();
    Py_INCREF(stored);
    return stored;
  }
  OwnedRef joined = OwnedRef::borrow(root_name_.get());
  for (std::size_t level = 1; level <= depth; ++level) {
    joined = OwnedRef::steal(join_name_generic(joined.get(), stack_[level].name.get()));
    if (!joined) {
      return nullptr;
    }
  }
  return joined.release();
}

// torch's memo: every module the base walk has entered so far (with
// remove_duplicate), as a Python set an override can read and extend.
bool Walker::ensure_memo() {
  if (memo_) {
    return true;
  }
  OwnedRef memo = OwnedRef::steal(PySet_New(nullptr));
  if (!memo) {
    return false;
  }
  int copied = seen_modules_.traverse(
      [](PyObject* member, void* set) { return PySet_Add(static_cast<PyObject*>(set), member); },
      memo.get());
  if (copied != 0) {
    return false;
  }
  memo_ = std::move(memo);
  seen_modules_.clear();
  return true;
}

// Checks the root's methods on torch's dispatch chain, from next_level_ on;
// the first override found supplies the rest of the walk. With
// `mirrored_only`, only the level the public function mirrors is checked.
bool Walker::dispatch_root(bool mirrored_only) {
  while (next_level_ < Dispatch::Children) {
    Dispatch level = next_level_;
    next_level_ = next_level(level);
    Method method;
    if (method_at(level, method)) {
      OwnedRef override = OwnedRef::steal(override_for(root_.get(), method));
      if (override) {
        next_level_ = Dispatch::Children;
        return delegate(override.get(), level);
      }
      if (PyErr_Occurred()) {
        return false;
      }
    }
    if (mirrored_only) {
      return true;
    }
  }
  return true;
}

bool Walker::method_at(Dispatch level, Method& method) const {
  method = chain_method(options_.kind, level);
  // _named_members(recurse=False) walks [(prefix, self)]: no named_modules.
  return method != Method::Count && (level != Dispatch::NamedModules || options_.recurse);
}

bool Walker::root_has_no_override_since_recorded() {
  for (int level = static_cast<int>(options_.dispatch);
       level < static_cast<int>(Dispatch::Children); ++level) {
    Method method;
    if (!method_at(static_cast<Dispatch>(level), method)) {
      continue;
    }
    OwnedRef override = OwnedRef::steal(override_for(root_.get(), method));
    if (override || PyErr_Occurred()) {
      PyErr_Clear();  // the walk goes on as it began; only the record is given up
      return false;
    }
  }
  return true;
}

// Calls the root's override of the method at `level` with the arguments
// torch's caller passes there, and takes its items from then on.
bool Walker::delegate(PyObject* callable, Dispatch level) {
  OwnedRef kwargs = OwnedRef::steal(PyDict_New());
  if (!kwargs) {
    return false;
  }
  PyObject* keywords = kwargs.get();
  bool mirrored = level == mirrored_level_;
  bool members = options_.kind != Kind::Modules;
  bool has_prefix = options_.named && PyUnicode_GET_LENGTH(root_name_.get()) != 0;
  bool ok = true;
  OwnedRef positional = OwnedRef::steal(PyTuple_New(0));
  if (!positional) {
    return false;
  }
  // A mirrored call passes what the user would: only what differs from the defaults.
  switch (level) {
    case Dispatch::Public:
      if (!members) {
        ok = options_.remove_duplicate || set_keyword(keywords, "remove_duplicate", Py_False);
      } else {
        ok = options_.recurse || set_keyword(keywords, "recurse", Py_False);
      }
      break;
    case Dispatch::Named:
      if (options_.named) {
        ok = (!has_prefix || set_keyword(keywords, "prefix", root_name_.get())) &&
            (options_.recurse || set_keyword(keywords, "recurse", Py_False)) &&
            (options_.remove_duplicate || set_keyword(keywords, "remove_duplicate", Py_False));
      } else {
        // torch's parameters(): self.named_parameters(recurse=recurse); without
        // dedup, `(p for _, p in m.named_parameters(recurse=r, remove_duplicate=False))`.
        ok = set_keyword(keywords, "recurse", as_bool(options_.recurse)) &&
            (options_.remove_duplicate || set_keyword(keywords, "remove_duplicate", Py_False));
      }
      break;
    case Dispatch::NamedMembers:  // torch's named_parameters() / named_buffers()
      positional = OwnedRef::steal(PyTuple_Pack(1, members_getter(options_.kind == Kind::Buffers)));
      ok = positional && set_keyword(keywords, "prefix", root_name_.get()) &&
          set_keyword(keywords, "recurse", as_bool(options_.recurse)) &&
          set_keyword(keywords, "remove_duplicate", as_bool(options_.remove_duplicate));
      break;
    default:  // named_modules at the root
      if (mirrored) {
        ok = (!has_prefix || set_keyword(keywords, "prefix", root_name_.get())) &&
            (options_.remove_duplicate || set_keyword(keywords, "remove_duplicate", Py_False));
      } else if (!members) {  // torch's modules()
        ok = set_keyword(keywords, "remove_duplicate", as_bool(options_.remove_duplicate));
      } else {  // torch's _named_members()
        ok = set_keyword(keywords, "prefix", root_name_.get()) &&
            set_keyword(keywords, "remove_duplicate", as_bool(options_.remove_duplicate));
      }
      break;
  }
  if (!ok) {
    return false;
  }
  OwnedRef result = OwnedRef::steal(PyObject_Call(callable, positional.get(), keywords));
  if (!result) {
    return false;
  }
  OwnedRef items = OwnedRef::steal(PyObject_GetIter(result.get()));
  if (!items) {
    return false;
  }
  if (level == Dispatch::NamedModules && members) {
    // The override yields the modules; their members are still read natively.
    root_done_ = true;
    return push(root_.get(), OwnedRef::borrow(root_name_.get()), std::move(items));
  }
  delegated_ = level == Dispatch::Public ? Delegated::Values : Delegated::Pairs;
  delegate_ = std::move(items);
  return true;
}

// The next item of a walk an override at the root supplies: the override's
// own items, filtered by requires_grad and stripped of names as torch's
// callers do. nullptr at the end or with an error set.
PyObject* Walker::next_delegated() {
  for (;;) {
    OwnedRef item = OwnedRef::steal(PyIter_Next(delegate_.get()));
    if (!item) {
      return PyErr_Occurred() ? fail() : (clear(), nullptr);
    }
    if (options_.named && !options_.trainable_only) {
      return item.release();  // the override's own items, as `m.named_X()` returns them
    }
    OwnedRef name;
    OwnedRef value;
    if (delegated_ == Delegated::Values) {
      value = OwnedRef::borrow(item.get());
    } else if (!unpack_pair(item.get(), name, value)) {
      return fail();
    }
    if (options_.trainable_only) {
      int trainable = requires_grad(value.get());
      if (trainable <= 0) {
        if (trainable < 0) {
          return fail();
        }
        continue;
      }
      if (options_.named) {  // `((n, p) for n, p in ... if p.requires_grad)`
        PyObject* pair = make_item(name.get(), value.get());
        return pair != nullptr ? pair : fail();
      }
    }
    return options_.named ? item.release() : value.release();
  }
}

bool Walker::start_members(PyObject* module, PyObject* name, bool generic_name) {
  members_name_ = OwnedRef::borrow(name);
  members_generic_name_ = generic_name;
  bool from_dict = false;
  OwnedRef mapping =
      OwnedRef::steal(member_mapping(module, member_attribute(options_.kind), &from_dict));
  if (!mapping) {
    return false;
  }
  if (recording_) {
    members_record_ = last_entered_;
    record_mapping(members_record_, mapping.get(), from_dict, /*children=*/false);
  }
  // Hold it and let the last one go (which may run code), then start: the
  // order of torch's `members = ...` before its `for` over them.
  std::exchange(members_mapping_, OwnedRef::borrow(mapping.get())).reset();
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
      OwnedRef pairs =
          OwnedRef::steal(script_module_members(module, options_.kind == Kind::Buffers));
      if (!pairs || !members_.start_pairs(pairs.get())) {
        return false;
      }
    } else if (!members_.start(mapping.get())) {
      return false;
    }
  }
  members_active_ = true;
  return true;
}

bool Walker::start_children(ModuleFrame& frame) {
  frame.children_started = true;
  bool from_dict = false;
  OwnedRef mapping =
      OwnedRef::steal(member_mapping(frame.module.get(), names().modules, &from_dict));
  if (!mapping) {
    return false;
  }
  if (recording_) {
    record_mapping(frame.record, mapping.get(), from_dict, /*children=*/true);
  }
  return frame.children.start(mapping.get());
}

bool Walker::push(PyObject* module, OwnedRef name, OwnedRef overridden) {
  // The cycle guard covers the frames this walk descends itself; an override
  // recurses as it sees fit, as it does under torch.
  if (!options_.remove_duplicate && !overridden && on_stack_.insert(module) < 0) {
    return false;
  }
  ModuleFrame& frame = stack_.emplace_back();
  if (recording_ && stack_.size() > recording_->depth) {
    recording_->depth = static_cast<std::uint32_t>(stack_.size());
  }
  frame.module = OwnedRef::borrow(module);
  frame.name = std::move(name);
  frame.overridden = std::move(overridden);
  frame.record = last_entered_;
  return true;
}

void Walker::pop() {
  // Move the frame out first: dropping its references may run a __del__,
  // which must find the stack already consistent.
  ModuleFrame done = std::move(stack_.back());
  stack_.pop_back();
  if (!options_.remove_duplicate && !done.overridden) {
    on_stack_.erase(done.module.get());
  }
}

// A named walk's pairs. When the consumer let the last one go (a for loop
// unpacking it, a deque draining), only our reference is left and it is
// refilled instead of freed and allocated again, as CPython's dict.items()
// and zip iterators do: no one else can see it change. Its old items are let
// go last, since that may run code.
PyObject* Walker::refill_pair(PyObject* pair, PyObject* name, PyObject* value) {
  PyObject* old_name = PyTuple_GET_ITEM(pair, 0);
  PyObject* old_value = PyTuple_GET_ITEM(pair, 1);
  Py_INCREF(name);
  Py_INCREF(value);
  PyTuple_SET_ITEM(pair, 0, name);
  PyTuple_SET_ITEM(pair, 1, value);
  if (!PyObject_GC_IsTracked(pair)) {
    PyObject_GC_Track(pair);  // a collection may have untracked it (its items were atomic)
  }
  Py_INCREF(pair);
  Py_DECREF(old_name);
  Py_DECREF(old_value);
  return pair;
}

PyObject* Walker::make_new_pair(PyObject* name, PyObject* value) {
  PyObject* pair = PyTuple_New(2);
  if (pair == nullptr) {
    return nullptr;
  }
  Py_INCREF(name);
  Py_INCREF(value);
  PyTuple_SET_ITEM(pair, 0, name);
  PyTuple_SET_ITEM(pair, 1, value);
  // The pair kept before is still the consumer's: letting ours go frees nothing.
  last_pair_ = OwnedRef::borrow(pair);
  return pair;
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
  members_generic_name_ = false;
  members_.reset();
  members_name_.reset();
  members_mapping_.reset();
  while (!stack_.empty()) {
    ModuleFrame done = std::move(stack_.back());
    stack_.pop_back();
  }
  stack_.shrink_to_fit();
  on_stack_.clear();
  seen_members_.clear();
  seen_modules_.clear();
  delegated_ = Delegated::None;
  delegate_.reset();
  override_item_.reset();
  last_pair_.reset();
  last_item_.reset();
  memo_.reset();
  unpin_all();
  replay_.reset();
  retired_.reset();
  recording_.reset();
  counting_ = false;
  root_.reset();
  root_name_.reset();
}

Py_ssize_t Walker::length_hint() const {
  if (finished_ || root_done_ || delegated_ != Delegated::None || !cache_enabled()) {
    return -1;
  }
  // Read at once, no code run: a look without a reference of our own (and
  // the shared pointer's two atomic counts) will do.
  const WalkRecord* record = peek_record(root_.get(), record_slot_);
  return record != nullptr ? static_cast<Py_ssize_t>(record->items) : -1;
}

int Walker::traverse(visitproc visit, void* arg) const {
  Py_VISIT(root_.get());
  Py_VISIT(root_name_.get());
  Py_VISIT(members_name_.get());
  Py_VISIT(members_mapping_.get());
  Py_VISIT(delegate_.get());
  Py_VISIT(override_item_.get());
  Py_VISIT(last_pair_.get());
  Py_VISIT(last_item_.get());
  Py_VISIT(memo_.get());
  if (int error = pins_.traverse(visit, arg)) {
    return error;
  }
  for (const PathEntry& entry : replay_path_) {
    Py_VISIT(entry.label);
    Py_VISIT(entry.module);
  }
  if (int error = members_.traverse(visit, arg)) {
    return error;
  }
  for (const ModuleFrame& frame : stack_) {
    Py_VISIT(frame.module.get());
    Py_VISIT(frame.name.get());
    Py_VISIT(frame.overridden.get());
    if (int error = frame.children.traverse(visit, arg)) {
      return error;
    }
  }
  if (int error = seen_members_.traverse(visit, arg)) {
    return error;
  }
  return seen_modules_.traverse(visit, arg);
}

}  // namespace pyparams
