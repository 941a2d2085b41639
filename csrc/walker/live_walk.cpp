#include "walker/walker.h"

#include <new>
#include <utility>

#include "cache/replay_program.h"
#include "support/counted_next.h"
#include "support/python_calls.h"
#include "support/python_names.h"
#include "walker/dispatch.h"
#include "walker/dotted_names.h"
#include "walker/memo_hash.h"
#include "walker/module_attributes.h"
#include "walker/script_module.h"
#include "walker/tensor_flags.h"

namespace pyparams {
namespace {

// Whether nn.Module.__init__ ran on `module`: its instance __dict__ holds
// `training`, which __init__ sets first. The error set when called is kept.
bool module_init_ran(PyObject* module) {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  OwnedRef dict = OwnedRef::steal(PyObject_GenericGetDict(module, nullptr));
  bool ran = dict && PyDict_Check(dict.get()) &&
      PyDict_GetItemWithError(dict.get(), names().training) != nullptr;
  PyErr_Clear();  // (a lookup's own error: the hint is only left out)
  PyErr_Restore(type, value, traceback);
  return ran;
}

// getattr(module, attribute), with an AttributeError that says what is most
// likely wrong: a subclass whose __init__ never called super().__init__().
// (Where __init__ ran and the attribute was deleted since, or where an override
// of named_modules() handed over something that is no module, torch's own error.)
PyObject* member_mapping(PyObject* module, PyObject* attribute, bool* from_dict = nullptr) {
  PyObject* value = module_attribute(module, attribute, from_dict);
  if (value == nullptr && PyErr_ExceptionMatches(PyExc_AttributeError) && is_module(module) &&
      !module_init_ran(module)) {
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
  clear();  // (a fresh walker holds nothing: no work)
  settled_ = false;
  OwnedRef referent;
  if (!is_module(root) && PyWeakref_CheckProxy(root)) {
    // `proxy.X()` runs its referent's method: the walk is the referent's.
    referent = proxy_referent(root);
    if (!referent) {
      return false;
    }
    if (is_module(referent.get())) {
      root = referent.get();
    }
  }
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
    dispatch_.mirrored = Dispatch::Public;
  } else {
    dispatch_.mirrored = options_.kind == Kind::Modules ? Dispatch::NamedModules : Dispatch::Named;
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
    dispatch_.mirrored = Dispatch::Named;
  }
  dispatch_.next = options_.dispatch;
  root_ = OwnedRef::borrow(root);
  // Unnamed walks still know torch's default prefix "": an override gets names.
  root_name_ = options_.named ? OwnedRef::borrow(prefix)
                              : OwnedRef::steal(PyUnicode_FromStringAndSize("", 0));
  if (!root_name_) {
    fail();
    return false;
  }
  phase_ = Phase::Ready;
  record_slot_ =
      record_slot(static_cast<int>(options_.kind), options_.recurse, options_.remove_duplicate);
  // The user's own call `m.X(...)` runs an override of X at once; torch's
  // generators reach the deeper methods at the first next().
  if (options_.dispatch == dispatch_.mirrored) {
    if (root_overrides_ruled_out()) {
      dispatch_.next = next_level(dispatch_.next);  // checked: none
    } else if (!dispatch_root(/*mirrored_only=*/true)) {
      fail();
      return false;
    }
  }
  return true;
}

// The first step of a walk, and every step of a live one.
PyObject* Walker::next_unreplayed() {
  switch (phase_) {
    case Phase::Finished:
      return nullptr;
    case Phase::Delegated:
      return next_delegated();
    case Phase::Replaying:
      return next();
    case Phase::Ready:
      return first_step();
    case Phase::Live:
      return next_live();
  }
  Py_UNREACHABLE();
}

bool Walker::ready() {
  phase_ = Phase::Live;  // unless an override or a record takes the walk over below
  try {
    if (root_overrides_ruled_out()) {
      dispatch_.next = Dispatch::Children;  // every level checked: none
    } else if (!dispatch_root(/*mirrored_only=*/false)) {
      fail();
      return false;
    }
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
    fail();
    return false;
  }
  if (phase_ == Phase::Delegated) [[unlikely]] {
    return true;
  }
  // (An overriding named_modules at the root has entered it already.)
  if (!live_.root_entered && !begin_cached_walk()) {
    fail();
    return false;
  }
  return true;
}

PyObject* Walker::first_step() {
  if (!ready()) {
    return nullptr;
  }
  switch (phase_) {
    case Phase::Delegated:
      return next_delegated();
    case Phase::Replaying:
      return next();
    default:
      return next_live();
  }
}

// A step of the live walk.
PyObject* Walker::next_live() {
  try {
    for (;;) {
      if (live_.members_active) {
        PyObject* item;
        int found = next_member(item);
        if (found < 0) {
          return fail();
        }
        if (found > 0) {
          return item;
        }
        live_.members_active = false;
        live_.members_name.reset();
      }

      OwnedRef module;
      OwnedRef name;
      int found = next_module(module, name);
      if (found < 0) {
        return fail();
      }
      if (found == 0) {
        if (recorder_.record) {
          finish_recording();
        } else if (recorder_.counting) {
          note_walk_size(root_.get(), recorder_.modules_entered);
        }
        clear();
        return nullptr;
      }
      if (options_.kind == Kind::Modules) {
        if (live_.override_item) [[unlikely]] {
          // torch's `yield from module.named_modules(...)`: the override's own items.
          return options_.named ? live_.override_item.release() : module.release();
        }
        if (!options_.named) {
          return module.release();
        }
        PyObject* item = make_item(name.get(), module.get());
        return item != nullptr ? item : fail();
      }
      // An override's name, one that is no exact str (its `+` is user code), or an
      // unnamed walk's name built where torch's `+` ran user code: joined before
      // the filter, as torch does.
      bool generic_name =
          live_.override_item || (name && (!options_.named || !PyUnicode_CheckExact(name.get())));
      live_.override_item.reset();
      if (!start_members(module.get(), name.get(), generic_name)) {
        return fail();
      }
    }
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
    return fail();
  }
}

int Walker::next_member(PyObject*& item) {
  for (;;) {
    if (!poll_signals()) {
      return -1;
    }
    PyObject* key;
    PyObject* value;
    int found = live_.members.next(key, value);
    if (found <= 0) {
      return found;
    }
    if (recorder_.record) {
      recorder_.record->members.push_back({key, value, live_.members.position()});
      ++recorder_.record->modules[recorder_.members_record].member_count;
    }
    if (value == Py_None) {
      continue;
    }
    // torch's `v in memo` runs a hash that is not the member's identity (or
    // such a hash went in before): the walk's HashMemo answers, the entry
    // held through that code.
    OwnedRef hashed_value;
    OwnedRef hashed_key;
    if ((live_.hashed && live_.hashed->members_active) || !member_hash_is_identity(value))
        [[unlikely]] {
      hashed_value = OwnedRef::borrow(value);
      hashed_key = OwnedRef::borrow(key);
      int admitted = hashed_memo_admits(value, /*member=*/true);
      if (admitted <= 0) {
        if (admitted < 0) {
          return -1;
        }
        continue;
      }
    } else if (options_.remove_duplicate) {
      int added = live_.seen_members.insert(value);
      if (added <= 0) {
        if (added < 0) {
          return -1;
        }
        continue;
      }
    }
    if (recorder_.record) {
      if (!PyUnicode_CheckExact(key)) [[unlikely]] {
        abandon_recording();  // a str subclass's `+` is user code: a replay could not name it
      } else {
        recorder_.record->members.back().yielded = true;  // a first occurrence: replay yields it
      }
    }
    // torch builds every name, unnamed walks too, before anyone sees the
    // item: where that `+` is user code (a key that is no exact str, or such
    // a name), it runs here, and a key no `+` can join raises torch's TypeError.
    bool join_runs_code = live_.members_generic_name || !PyUnicode_CheckExact(key);
    // From here Python code may run (requires_grad of a subclass, a name
    // joined with `+`): hold what is still needed.
    OwnedRef held_value = OwnedRef::borrow(value);
    OwnedRef held_key = OwnedRef::borrow(options_.named || join_runs_code ? key : nullptr);
    OwnedRef name;
    if (join_runs_code) [[unlikely]] {
      if (!ensure_members_name()) {
        return -1;
      }
      name = OwnedRef::steal(join_name_generic(live_.members_name.get(), held_key.get()));
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
      if (!ensure_members_name()) {  // a deep module's name, built at its first member
        return -1;
      }
      name = OwnedRef::steal(join_name_generic(live_.members_name.get(), held_key.get()));
      if (!name) {
        return -1;
      }
    }
    item = make_item(name.get(), held_value.get());
    return item != nullptr ? 1 : -1;
  }
}

int Walker::next_module(OwnedRef& module, OwnedRef& name) {
  live_.override_item.reset();
  if (!live_.root_entered) {
    live_.root_entered = true;
    recorder_.modules_entered = 1;
    // torch's named_modules asks `self not in memo` of the root too (a walk
    // of the root's own members alone asks nothing). The memo is empty then:
    // only the hash runs.
    bool hashed = options_.recurse || options_.kind == Kind::Modules;
    if (hashed && !module_hash_is_identity(root_.get())) [[unlikely]] {
      OwnedRef root = OwnedRef::borrow(root_.get());
      if (hashed_memo_admits(root.get(), /*member=*/false) < 0) {
        return -1;
      }
    } else if (options_.remove_duplicate && live_.seen_modules.insert(root_.get()) < 0) {
      return -1;
    }
    module = OwnedRef::borrow(root_.get());
    name = OwnedRef::borrow(options_.named ? root_name_.get() : nullptr);
    if (options_.recurse) {
      if (!push(root_.get(), OwnedRef::borrow(options_.named ? root_name_.get() : nullptr))) {
        return -1;
      }
      live_.stack.back().full_name = options_.named;  // its name: the prefix, full
    }
    return 1;
  }
  while (!live_.stack.empty()) {
    // Signal handlers run Python code that may change the tree: check before
    // reading an entry, never between reading a borrowed entry and owning it.
    if (!poll_signals()) {
      return -1;
    }
    ModuleFrame& top = live_.stack.back();
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
    if (recorder_.record && found > 0) {
      const ModuleRecord& record = recorder_.record->modules[top.record];
      recorder_.record->children[record.first_child + top.entries_read++] = {
          key, child, top.children.position()};
    }
    if (found < 0) {
      return -1;
    }
    if (found == 0) {
      pop();
      continue;
    }
    // torch's `for name, module in self._modules.items()` rebinds `module`
    // now, with this entry in hand: the child read before goes, which may run
    // code (the frame keeps the new child and the key is owned first; `top`
    // stays, since no code can push or pop this walk's frames).
    OwnedRef owned_key = OwnedRef::borrow(key);
    std::exchange(top.current_child, OwnedRef::borrow(child)).reset();
    if (child == Py_None) {
      continue;
    }
    int descended = descend(OwnedRef::borrow(child), std::move(owned_key), module, name);
    if (descended != 0) {
      return descended;
    }
  }
  return 0;
}

// The next (name, module) item of an overriding named_modules: 1 with
// `module`, `name` and live_.override_item set, 0 at its end, -1 with an error set.
int Walker::next_overridden(ModuleFrame& frame, OwnedRef& module, OwnedRef& name) {
  OwnedRef item = OwnedRef::steal(next_counted(frame.overridden.get()));
  if (!item) {
    delegated_raised_ = PyErr_Occurred() != nullptr;
    return delegated_raised_ ? -1 : 0;
  }
  // torch's named_modules passes the items on as they are (`yield from`); its
  // callers unpack them (`for name, module in ...`).
  bool passed_on = options_.kind == Kind::Modules && options_.named;
  if (!passed_on && !unpack_pair(item.get(), name, module)) {
    return -1;
  }
  live_.override_item = std::move(item);
  return 1;
}

// Enters `child` (reached under `key` of the top frame): 1 when it is the next
// module, 0 when it is skipped as a duplicate or handed to an override, -1
// with an error set.
int Walker::descend(OwnedRef child, OwnedRef key, OwnedRef& module, OwnedRef& name) {
  // torch's named_modules builds the child's name first, then calls the
  // child's named_modules, which skips a duplicate: a `+` that is user code
  // runs before any look at the child, for a duplicate too.
  // A named walk's frame deep enough keeps its key alone (name_can_wait): its
  // name, all exact str, is built where used, with the same result as now.
  Py_ssize_t name_length = 0;
  bool key_only =
      options_.named ? name_can_wait(key.get(), name_length) : !join_runs_code(key.get());
  OwnedRef full_name;
  if (!key_only || (options_.named && options_.kind == Kind::Modules)) {
    full_name = OwnedRef::steal(child_name(key.get()));
    if (!full_name) {
      return -1;
    }
  }
  if (!is_module(child.get())) [[unlikely]] {
    // torch calls `child.named_modules(...)` on whatever the dict holds: an
    // object that has one supplies the subtree; one without raises there.
    OwnedRef method =
        OwnedRef::steal(PyObject_GetAttr(child.get(), method_name(Method::NamedModules)));
    if (!method) {
      return -1;
    }
    return call_named_modules_override(method.get(), std::move(child), std::move(key),
                                       std::move(full_name));
  }
  // Recording: the child's versions are taken before the reads they vouch
  // for (its override check, here, may run code that changes it).
  std::uint32_t entered_before = recorder_.last_entered;
  // (A key that is no exact str would name the frame with its own `+`, user
  // code a replay cannot run: such a tree is walked live.)
  if (recorder_.record && (!PyUnicode_CheckExact(key.get()) || !record_enter(child.get()))) {
    abandon_recording();
  }
  bool recorded = static_cast<bool>(recorder_.record);
  // A duplicate is no module the record entered: its ModuleRecord goes.
  auto unrecord = [&]() {
    if (recorded && recorder_.record) {
      recorder_.record->modules.pop_back();
      recorder_.last_entered = entered_before;
    }
  };
  // torch calls `child.named_modules(memo, prefix, remove_duplicate)` here.
  OwnedRef override = OwnedRef::steal(override_for(child.get(), Method::NamedModules));
  if (override) [[unlikely]] {
    return call_named_modules_override(override.get(), std::move(child), std::move(key),
                                       std::move(full_name));
  }
  if (PyErr_Occurred()) {
    return -1;
  }
  if (live_.memo) [[unlikely]] {
    int present = PySet_Contains(live_.memo.get(), child.get());
    if (present != 0) {
      unrecord();
      return present < 0 ? -1 : 0;
    }
    if (options_.remove_duplicate && PySet_Add(live_.memo.get(), child.get()) < 0) {
      return -1;
    }
  } else if ((live_.hashed && live_.hashed->modules_active) ||
             !module_hash_is_identity(child.get())) [[unlikely]] {
    int admitted = hashed_memo_admits(child.get(), /*member=*/false);
    if (admitted <= 0) {
      unrecord();
      return admitted;
    }
  } else if (options_.remove_duplicate) {
    int added = live_.seen_modules.insert(child.get());
    if (added <= 0) {
      unrecord();
      return added;
    }
  }
  if (!options_.remove_duplicate && live_.on_stack.contains(child.get())) {
    PyErr_Format(PyExc_RuntimeError,
                 "module graph has a cycle: '%.100s' under key %R contains itself; "
                 "remove_duplicate=False would walk it forever",
                 Py_TYPE(child.get())->tp_name, key.get());
    return -1;
  }
  // The frame keeps the full name where it keeps one, else its key (the name
  // is built on demand); the module's item gets any name built.
  if (full_name) {
    name = OwnedRef::borrow(full_name.get());
  }
  OwnedRef frame_label = key_only ? std::move(key) : std::move(full_name);
  if (recorder_.record) {
    ModuleFrame& parent = live_.stack.back();
    EntryRecord& entry =
        recorder_.record->children[recorder_.record->modules[parent.record].first_child +
                                   parent.entries_read - 1];
    entry.entered = static_cast<std::int32_t>(recorder_.record->modules.size() - 1);
  }
  ++recorder_.modules_entered;
  module = OwnedRef::borrow(child.get());
  if (!push(child.get(), std::move(frame_label))) {
    return -1;
  }
  ModuleFrame& frame = live_.stack.back();
  if (!key_only) {
    frame.full_name = true;
  } else {
    frame.key_only_length = name_length;
    if (name) {  // named_modules built it for the item: its children start from it
      deep_name_ = OwnedRef::borrow(name.get());
      deep_name_depth_ = static_cast<std::uint32_t>(live_.stack.size() - 1);
    }
  }
  return 1;
}

bool Walker::join_runs_code(PyObject* key) const {
  return !PyUnicode_CheckExact(key) || live_.stack.back().full_name;
}

bool Walker::name_can_wait(PyObject* key, Py_ssize_t& length) const {
  const ModuleFrame& parent = live_.stack.back();
  if (!PyUnicode_CheckExact(key) || parent.overridden ||
      (parent.full_name && !PyUnicode_CheckExact(parent.name.get()))) {
    return false;  // a `+` that may be user code runs where torch runs it
  }
  Py_ssize_t parent_length =
      parent.full_name ? PyUnicode_GET_LENGTH(parent.name.get()) : parent.key_only_length;
  length = joined_length(parent_length, PyUnicode_GET_LENGTH(key));
  return length > kMaxKeptNameLength;
}

bool Walker::ensure_members_name() {
  if (live_.members_name) {
    return true;
  }
  // A recursing walk reads the members of the module on top of its stack;
  // one that does not, the root's (named torch's default prefix, "").
  live_.members_name = options_.recurse && !live_.stack.empty()
      ? OwnedRef::steal(frame_name(live_.stack.size() - 1))
      : OwnedRef::borrow(root_name_.get());
  return static_cast<bool>(live_.members_name);
}

// Calls an overriding `child.named_modules(memo, prefix, remove_duplicate)`
// and stacks its items in place of the child's subtree. 0, or -1 with an error set.
int Walker::call_named_modules_override(PyObject* callable, OwnedRef child, OwnedRef key,
                                        OwnedRef prefix) {
  abandon_recording();  // what an override yields is no dict a version could vouch for
  if (!ensure_memo()) {
    return -1;
  }
  if (!prefix) {  // (exact str parts: joining them now or before runs no code)
    prefix = OwnedRef::steal(child_name(key.get()));
    if (!prefix) {
      return -1;
    }
  }
  OwnedRef result = OwnedRef::steal(PyObject_CallFunctionObjArgs(
      callable, live_.memo.get(), prefix.get(), as_bool(options_.remove_duplicate), nullptr));
  if (!result) {
    return -1;
  }
  OwnedRef items = OwnedRef::steal(PyObject_GetIter(result.get()));
  if (!items) {
    return -1;
  }
  return push(child.get(), std::move(prefix), std::move(items)) ? 0 : -1;
}

PyObject* Walker::child_name(PyObject* key) {
  OwnedRef parent_name = OwnedRef::steal(frame_name(live_.stack.size() - 1));
  return parent_name ? join_name_generic(parent_name.get(), key) : nullptr;
}

// The name torch gives the module of live_.stack[depth]: the one its frame
// holds (full_name), else joined from the frames' exact str keys (a deep
// frame of a named walk; an unnamed walk's). A new reference.
PyObject* Walker::frame_name(std::size_t depth) {
  // (An unnamed walk's root frame holds no name: its name is root_name_.)
  return name_from_keys(
      depth,
      [&](std::size_t level) {
        return level == 0 || live_.stack[level].full_name || live_.stack[level].overridden;
      },
      [&](std::size_t level) {
        PyObject* held = live_.stack[level].name.get();
        return held != nullptr ? held : root_name_.get();
      });
}

// torch's memo: every module the base walk has entered so far (with
// remove_duplicate), as a Python set an override can read and extend.
bool Walker::ensure_memo() {
  if (live_.memo) {
    return true;
  }
  OwnedRef memo = OwnedRef::steal(PySet_New(nullptr));
  if (!memo) {
    return false;
  }
  auto add = [](PyObject* member, void* set) {
    return PySet_Add(static_cast<PyObject*>(set), member);
  };
  if (live_.seen_modules.traverse(add, memo.get()) != 0) {
    return false;
  }
  // Those hashed by code of their own: hashed again (and, where a class
  // changed its hash since, filed under the new one, which torch's set would not).
  if (live_.hashed && live_.hashed->modules_active &&
      live_.hashed->modules.traverse(add, memo.get()) != 0) {
    return false;
  }
  live_.memo = std::move(memo);
  live_.seen_modules.clear();
  if (live_.hashed) {
    live_.hashed->modules_active = false;
    live_.hashed->modules.clear();
  }
  return true;
}

// torch's `x in memo` and, removing duplicates, `memo.add(x)` where x or
// something before it in that memo hashes by code of its own (memo_hash.h),
// on the walk's HashMemo for members (`member`) or modules, made from the
// identity set at its first use: 1 for an object to walk, 0 for a duplicate,
// -1 with an error set. A hash and an `==` are code, which the caller holds
// `object` through; a replay could not run it, so the record goes. Throws
// std::bad_alloc.
int Walker::hashed_memo_admits(PyObject* object, bool member) {
  abandon_recording();
  if (!live_.hashed) {
    live_.hashed = std::make_unique<LiveWalk::HashedMemos>();
  }
  auto memo = [&]() -> HashMemo& {  // (re-read after code has run)
    return member ? live_.hashed->members : live_.hashed->modules;
  };
  // The hash torch's memo gives an object proven to hash by identity: no code runs.
  auto identity_hash = [member](PyObject* proven) {
    return member ? tensor_identity_hash(proven) : object_identity_hash(proven);
  };
  bool& active = member ? live_.hashed->members_active : live_.hashed->modules_active;
  if (!active) {
    // What the identity set holds, under the hash it went in with (proven then).
    PointerSet& seen = member ? live_.seen_members : live_.seen_modules;
    HashMemo* target = &memo();
    seen.for_each_member(
        [&](PyObject* seen_object) { target->add(seen_object, identity_hash(seen_object)); });
    seen.clear();
    active = true;
  }
  // torch hashes it for `in`, and again for `add`: code each time, unless
  // its hash is its identity.
  auto hash_of = [&]() -> Py_hash_t {
    if (member ? member_hash_is_identity(object) : module_hash_is_identity(object)) {
      return identity_hash(object);
    }
    return hash_for_set(object);
  };
  Py_hash_t hash = hash_of();
  if (hash == -1) {
    return -1;
  }
  int present = memo().contains(object, hash);
  if (present != 0) {
    return present < 0 ? -1 : 0;
  }
  if (!options_.remove_duplicate) {
    return 1;
  }
  hash = hash_of();
  if (hash == -1) {
    return -1;
  }
  present = memo().contains(object, hash);  // (`add` probes as `in` did)
  if (present < 0) {
    return -1;
  }
  if (present == 0) {
    memo().add(object, hash);
  }
  return 1;
}

bool Walker::start_members(PyObject* module, PyObject* name, bool generic_name) {
  // torch's `for module_prefix, module in modules:` rebinds `module` before it
  // reads the new one's members: the one before goes first (may run code).
  std::exchange(live_.members_module, OwnedRef::borrow(module)).reset();
  live_.members_name = OwnedRef::borrow(name);
  live_.members_generic_name = generic_name;
  bool from_dict = false;
  OwnedRef mapping =
      OwnedRef::steal(member_mapping(module, member_attribute(options_.kind), &from_dict));
  if (!mapping) {
    return false;
  }
  if (recorder_.record) {
    recorder_.members_record = recorder_.last_entered;
    record_mapping(recorder_.members_record, mapping.get(), from_dict, /*children=*/false);
  }
  // Hold it and let the last one go (which may run code), then start: the
  // order of torch's `members = ...` before its `for` over them.
  std::exchange(live_.members_mapping, OwnedRef::borrow(mapping.get())).reset();
  if (PyDict_CheckExact(mapping.get())) [[likely]] {
    if (!live_.members.start(mapping.get())) {
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
      if (!pairs || !live_.members.start_pairs(pairs.get())) {
        return false;
      }
    } else if (!live_.members.start(mapping.get())) {
      return false;
    }
  }
  live_.members_active = true;
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
  if (recorder_.record) {
    record_mapping(frame.record, mapping.get(), from_dict, /*children=*/true);
  }
  return frame.children.start(mapping.get());
}

bool Walker::push(PyObject* module, OwnedRef name, OwnedRef overridden) {
  // The cycle guard covers the frames this walk descends itself; an override
  // recurses as it sees fit, as it does under torch.
  if (!options_.remove_duplicate && !overridden && live_.on_stack.insert(module) < 0) {
    return false;
  }
  ModuleFrame& frame = live_.stack.emplace_back();
  if (recorder_.record && live_.stack.size() > recorder_.record->depth) {
    recorder_.record->depth = static_cast<std::uint32_t>(live_.stack.size());
  }
  frame.module = OwnedRef::borrow(module);
  frame.name = std::move(name);
  frame.overridden = std::move(overridden);
  frame.record = recorder_.last_entered;
  return true;
}

void Walker::pop() {
  // Move the frame out first: dropping its references may run a __del__,
  // which must find the stack already consistent.
  ModuleFrame done = std::move(live_.stack.back());
  live_.stack.pop_back();
  if (deep_name_ && deep_name_depth_ >= live_.stack.size()) {
    deep_name_.reset();  // its frame is gone (a str: no code runs)
  }
  if (!options_.remove_duplicate && !done.overridden) {
    live_.on_stack.erase(done.module.get());
  }
  let_pair_keep_no_module(done.module.get());
  // As torch's generator frame ends: `self` first (the parent's current child
  // still holds it), then its own last child.
  done.module.reset();
  done.current_child.reset();
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

void Walker::let_pair_keep_no_module(PyObject* module) {
  PyObject* pair = last_pair_.get();
  if (options_.kind != Kind::Modules || pair == nullptr || Py_REFCNT(pair) != 1 ||
      PyTuple_GET_ITEM(pair, 1) != module) {
    return;
  }
  Py_INCREF(Py_None);
  PyTuple_SET_ITEM(pair, 1, Py_None);
  Py_DECREF(module);  // (not its last reference: see the header)
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
  if (!std::exchange(delegated_raised_, false)) {
    close_delegated_unraisable();
  }
  clear();
  PyErr_Restore(type, value, traceback);
  return nullptr;
}

void Walker::clear() noexcept {
  if (settled_) {
    return;  // nothing taken since the last clear(): a walk's end, then its dealloc
  }
  phase_ = Phase::Finished;
  live_.root_entered = false;
  live_.members_active = false;
  live_.members_generic_name = false;
  live_.members.reset();
  live_.members_name.reset();
  live_.members_mapping.reset();
  live_.members_module.reset();
  while (!live_.stack.empty()) {
    ModuleFrame done = std::move(live_.stack.back());
    live_.stack.pop_back();
  }
  live_.stack.shrink_to_fit();
  live_.on_stack.clear();
  live_.seen_members.clear();
  live_.seen_modules.clear();
  dispatch_.pairs = false;
  dispatch_.as_returned = false;
  dispatch_.yield_from = false;
  dispatch_.delegate.reset();
  live_.override_item.reset();
  last_pair_.reset();
  last_item_.reset();
  live_.memo.reset();
  std::unique_ptr<LiveWalk::HashedMemos> hashed = std::move(live_.hashed);
  hashed.reset();  // (out of the walk first: dropping what they hold may run code)
  unpin_all();
  replay_.record.reset();
  replay_.retired.reset();
  recorder_.record.reset();
  recorder_.counting = false;
  root_.reset();
  root_name_.reset();
  delegated_raised_ = false;
  // Only start() takes references again. A clear() run by code that the drops
  // above ran (a __del__ closing this walk) found the same state: idempotent.
  settled_ = true;
}

Py_ssize_t Walker::length_hint() const {
  if (phase_ != Phase::Ready || !cache_enabled()) {
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
  Py_VISIT(live_.members_name.get());
  Py_VISIT(live_.members_mapping.get());
  Py_VISIT(live_.members_module.get());
  Py_VISIT(dispatch_.delegate.get());
  Py_VISIT(live_.override_item.get());
  Py_VISIT(last_pair_.get());
  Py_VISIT(last_item_.get());
  Py_VISIT(live_.memo.get());
  if (live_.hashed) {
    if (int error = live_.hashed->members.traverse(visit, arg)) {
      return error;
    }
    if (int error = live_.hashed->modules.traverse(visit, arg)) {
      return error;
    }
  }
  if (int error = replay_.pins.traverse(visit, arg)) {
    return error;
  }
  for (const PathEntry& entry : replay_.path) {
    Py_VISIT(entry.label);
    Py_VISIT(entry.module);
  }
  if (int error = live_.members.traverse(visit, arg)) {
    return error;
  }
  for (const ModuleFrame& frame : live_.stack) {
    Py_VISIT(frame.module.get());
    Py_VISIT(frame.name.get());
    Py_VISIT(frame.overridden.get());
    Py_VISIT(frame.current_child.get());
    if (int error = frame.children.traverse(visit, arg)) {
      return error;
    }
  }
  if (int error = live_.seen_members.traverse(visit, arg)) {
    return error;
  }
  return live_.seen_modules.traverse(visit, arg);
}

}  // namespace pyparams
