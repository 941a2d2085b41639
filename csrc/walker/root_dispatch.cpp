// Asking the root's methods on torch's dispatch chain (support/dispatch_chain.h):
// the first override found supplies the rest of the walk, called with the
// arguments torch's caller passes at that level.
#include "cache/walk_cache.h"
#include "support/counted_next.h"
#include "support/python_calls.h"
#include "walker/dispatch.h"
#include "walker/tensor_flags.h"
#include "walker/walker.h"

namespace pyparams {

// A record of this walk was made by a walk that checked every level from
// dispatch_.next on and found no override; if the root still reads as it did
// then (its class at the same version, its __dict__ unchanged, under the same
// base methods: find_record drops other epochs), no override can have
// appeared since. About a fifth of a small model's warm walk was spent asking.
bool Walker::root_overrides_ruled_out() {
  if (!cache_enabled()) {
    return false;
  }
  const WalkRecord* record = peek_record(root_.get(), record_slot_);
  return record != nullptr && record->dispatch_from <= static_cast<int>(dispatch_.next) &&
      !record->modules.empty() &&
      read_module(record->modules[0], unchanged_since(record->proven_at)) == ModuleRead::AsRecorded;
}

// Checks the root's methods on torch's dispatch chain, from dispatch_.next on;
// the first override found supplies the rest of the walk. With
// `mirrored_only`, only the level the public function mirrors is checked.
bool Walker::dispatch_root(bool mirrored_only) {
  while (dispatch_.next < Dispatch::Children) {
    Dispatch level = dispatch_.next;
    dispatch_.next = next_level(level);
    Method method;
    if (method_at(level, method)) {
      OwnedRef override = OwnedRef::steal(override_for(root_.get(), method));
      if (override) {
        dispatch_.next = Dispatch::Children;
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
  bool mirrored = level == dispatch_.mirrored;
  bool members = options_.kind != Kind::Modules;
  bool ok = true;
  OwnedRef positional = OwnedRef::steal(PyTuple_New(0));
  if (!positional) {
    return false;
  }
  // A mirrored call passes what the user passed (by keyword), and nothing else:
  // an override may have defaults of its own. Deeper levels pass what torch's
  // caller at that level passes.
  auto maybe = [keywords](bool pass, const char* name, PyObject* value) {
    return !pass || set_keyword(keywords, name, value);
  };
  PyObject* recurse = as_bool(options_.recurse);
  PyObject* remove_duplicate = as_bool(options_.remove_duplicate);
  switch (level) {
    case Dispatch::Public:  // only ever mirrored: parameters(), buffers(), modules()
      ok = members ? maybe(options_.recurse_given, "recurse", recurse)
                   : maybe(options_.remove_duplicate_given, "remove_duplicate", remove_duplicate);
      break;
    case Dispatch::Named:
      if (options_.named) {  // mirrored: named_parameters(), named_buffers()
        ok = maybe(options_.prefix_given, "prefix", root_name_.get()) &&
            maybe(options_.recurse_given, "recurse", recurse) &&
            maybe(options_.remove_duplicate_given, "remove_duplicate", remove_duplicate);
      } else {
        // torch's parameters(): self.named_parameters(recurse=recurse); mirrored (without
        // dedup): `(p for _, p in m.named_parameters(remove_duplicate=False, ...))`.
        ok = maybe(!mirrored || options_.recurse_given, "recurse", recurse) &&
            maybe(!options_.remove_duplicate, "remove_duplicate", Py_False);
      }
      break;
    case Dispatch::NamedMembers:  // torch's named_parameters() / named_buffers()
      positional = OwnedRef::steal(PyTuple_Pack(1, members_getter(options_.kind == Kind::Buffers)));
      ok = positional && set_keyword(keywords, "prefix", root_name_.get()) &&
          set_keyword(keywords, "recurse", recurse) &&
          set_keyword(keywords, "remove_duplicate", remove_duplicate);
      break;
    default:  // named_modules at the root
      if (mirrored) {
        ok = maybe(options_.prefix_given, "prefix", root_name_.get()) &&
            maybe(options_.remove_duplicate_given, "remove_duplicate", remove_duplicate);
      } else if (!members) {  // torch's modules()
        ok = set_keyword(keywords, "remove_duplicate", remove_duplicate);
      } else {  // torch's _named_members()
        ok = set_keyword(keywords, "prefix", root_name_.get()) &&
            set_keyword(keywords, "remove_duplicate", remove_duplicate);
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
  if (mirrored && !options_.trainable_only && (options_.named || level == Dispatch::Public)) {
    // `m.X(...)` returns what the override returns, whatever it is: so does
    // the public function (take_override_result); collect() iterates it.
    phase_ = Phase::Delegated;
    dispatch_.pairs = level != Dispatch::Public;
    dispatch_.as_returned = true;
    dispatch_.delegate = std::move(result);
    return true;
  }
  OwnedRef items = OwnedRef::steal(PyObject_GetIter(result.get()));
  if (!items) {
    return false;
  }
  if (level == Dispatch::NamedModules && members) {
    // The override yields the modules; their members are still read natively.
    live_.root_entered = true;
    return push(root_.get(), OwnedRef::borrow(root_name_.get()), std::move(items));
  }
  phase_ = Phase::Delegated;
  dispatch_.pairs = level != Dispatch::Public;
  dispatch_.yield_from = level == Dispatch::NamedMembers;  // named_X: `yield from gen`
  dispatch_.delegate = std::move(items);
  return true;
}

// The next item of a walk an override at the root supplies: the override's
// own items, filtered by requires_grad and stripped of names as torch's
// callers do. nullptr at the end or with an error set.
PyObject* Walker::next_delegated() {
  if (dispatch_.as_returned) {
    dispatch_.as_returned = false;
    OwnedRef items = OwnedRef::steal(PyObject_GetIter(dispatch_.delegate.get()));
    if (!items) {
      return fail();
    }
    dispatch_.delegate = std::move(items);
  }
  for (;;) {
    OwnedRef item = OwnedRef::steal(next_counted(dispatch_.delegate.get()));
    if (!item) {
      delegated_raised_ = PyErr_Occurred() != nullptr;
      return delegated_raised_ ? fail() : (clear(), nullptr);
    }
    if (options_.named && !options_.trainable_only) {
      return item.release();  // the override's own items, as `m.named_X()` returns them
    }
    OwnedRef name;
    OwnedRef value;
    if (!dispatch_.pairs) {
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

PyObject* Walker::take_override_result() {
  if (phase_ != Phase::Delegated || !dispatch_.as_returned) {
    return nullptr;
  }
  PyObject* result = dispatch_.delegate.release();
  clear();
  return result;
}

}  // namespace pyparams
