// The replay of a warm walk (walk_cache.h): a record's program run step by
// step, each read checked by versions at the moment the live walk would make
// it; on the first difference the walk goes live from exactly that point.
#include <new>
#include <utility>

#include "cache/replay_program.h"
#include "support/python_names.h"
#include "walker/dispatch.h"
#include "walker/dotted_names.h"
#include "walker/memo_hash.h"
#include "walker/module_attributes.h"
#include "walker/tensor_flags.h"
#include "walker/walker.h"

namespace pyparams {
// A module whose __dict__ was written for another reason (model.train()
// writes `training` everywhere) is re-checked entry by entry: the member dicts
// it maps and no `named_modules` attribute; for the root, no attribute named
// like any method of torch's dispatch chain either, since a root that reads
// as recorded is taken to have none (root_overrides_ruled_out). Then the
// version taken before those reads is kept. Only a __dict__ whose keys are all
// exact str is re-read: its lookups run no user code, so this step's checks
// still stand after them; any other goes live, where every read is held.
bool Walker::revalidate(ModuleRecord& recorded) {
  PyObject* dict = recorded.dict;
  // The version first: a write after it, even one made by the reads below,
  // leaves the record behind and is met by the next check.
  Version version = current_version(dict);
  if (version == 0 || !keys_are_exact_str(dict)) {
    return false;  // no longer followed (the cache was cleared), or lookups could run code
  }
  PyObject* members_name = member_attribute(options_.kind);
  bool root = &recorded == replay_.record->modules.data();
  if ((recorded.members != nullptr && PyDict_GetItem(dict, members_name) != recorded.members) ||
      (recorded.children != nullptr &&
       PyDict_GetItem(dict, names().modules) != recorded.children)) {
    return false;
  }
  for (std::size_t method = 0; method < kMethodCount; ++method) {
    auto asked = static_cast<Method>(method);
    if ((root || asked == Method::NamedModules) &&
        PyDict_GetItem(dict, method_name(asked)) != nullptr) {
      return false;
    }
  }
  // The record is shared by every walk of this root; the new version holds for all.
  recorded.dict_version = version;
  ++cache_counters().revalidations;
  return true;
}

namespace {
// A path a replay let go, emptied, kept for the next named replay: a small
// walk's path then costs no allocation. Never destroyed: its memory is
// pymalloc's, which is gone by the time static destructors run.
constexpr std::size_t kSparePathEntriesMax = 32;
WalkVector<Walker::PathEntry>* const g_spare_path =
    new (std::nothrow) WalkVector<Walker::PathEntry>();
}  // namespace

std::size_t spare_buffer_bytes() noexcept {
  std::size_t path = g_spare_path != nullptr ? g_spare_path->capacity() : 0;
  return PinBuffer::spare_bytes() + path * sizeof(Walker::PathEntry);
}

void release_spare_buffers() noexcept {
  PinBuffer::free_spare();
  if (g_spare_path != nullptr) {
    WalkVector<Walker::PathEntry>().swap(*g_spare_path);
  }
}

void Walker::reserve_path(std::size_t entries) {
  if (replay_.path.empty() && replay_.path.capacity() < entries && g_spare_path != nullptr &&
      g_spare_path->capacity() >= entries) {
    replay_.path.swap(*g_spare_path);
  }
  replay_.path.reserve(entries);
}

void Walker::unpin_all() noexcept {
  deep_name_.reset();  // (clear() ends every walk here too, live ones included)
  replay_.pins.release_all();
  WalkVector<PathEntry> path;
  path.swap(replay_.path);
  for (const PathEntry& entry : path) {
    Py_XDECREF(entry.label);
    Py_XDECREF(entry.module);
  }
  // (After the drops: code they ran may have taken the spare or given one.)
  if (g_spare_path != nullptr && g_spare_path->capacity() == 0 &&
      path.capacity() <= kSparePathEntriesMax) {
    path.clear();
    g_spare_path->swap(path);
  }
}

// Whether the record's name table is this walk's: another walk of the same
// record under another prefix may have replaced it since this one began (two
// iterators open at once).
inline bool Walker::names_table_ours() const {
  return replay_.names_cached && replay_.record->names_generation == replay_.names_generation;
}

// A named replay's name kept in the record's table, or null.
inline PyObject* Walker::kept_name(const RawVector<PyObject*>& names, std::size_t index) const {
  return names_table_ours() ? names[index] : nullptr;
}

// The path's entry for the module an Enter op entered at depth d: its name
// (named replays: from its parent's name and the key it was reached under)
// or its key, and without dedup the module. The entries of modules left
// since are dropped here: names and keys are exact str (recording takes no
// other), whose release runs no code; a module only the path held is not
// dropped mid-step (its __del__ is user code): the live walk drops it.
template <bool kNamed>
[[gnu::always_inline]] inline int Walker::enter_path(const WalkRecord& record, const ReplayOp& op) {
  while (replay_.path.size() > op.extent) {
    PathEntry left = replay_.path.back();
    if (left.module != nullptr && Py_REFCNT(left.module) == 1) [[unlikely]] {
      return 0;
    }
    replay_.path.pop_back();
    Py_XDECREF(left.label);
    Py_XDECREF(left.module);
  }
  if (kNamed && deep_name_ && deep_name_depth_ >= op.extent) [[unlikely]] {
    deep_name_.reset();  // its entry is replaced (a str: no code runs)
  }
  PyObject* key = record.children[op.entry].key;
  PyObject* label;
  Py_ssize_t key_only_length = 0;
  if (kNamed) {
    auto index = static_cast<std::size_t>(op.module - record.modules.data());
    label = kept_name(record.module_names, index);  // (kept: no longer than kMaxKeptNameLength)
    if (label != nullptr) [[likely]] {
      Py_INCREF(label);
    } else {
      label = unkept_path_label(index, key, key_only_length);
      if (label == nullptr) {
        return -1;
      }
    }
  } else {
    label = key;
    Py_INCREF(label);
  }
  PyObject* module = options_.remove_duplicate ? nullptr : op.module->module;
  Py_XINCREF(module);
  replay_.path.push_back({label, module, key_only_length});  // reserved to the record's depth
  return 1;
}

// enter_path's label where the record's table has no name: the name built
// (exact str on both sides: a plain concatenation, no user code), or, deep
// enough, the key alone (as the live walk's frames keep it): the name is then
// built where it is used. Out of line: enter_path is inlined in the replay.
[[gnu::noinline]] PyObject* Walker::unkept_path_label(std::size_t index, PyObject* key,
                                                      Py_ssize_t& key_only_length) {
  Py_ssize_t length = joined_length(replay_.path.back().name_length(), PyUnicode_GET_LENGTH(key));
  if (length > kMaxKeptNameLength) {
    key_only_length = length;
    Py_INCREF(key);
    return key;
  }
  return build_replayed_name(replay_.record->module_names, index, replay_.path.back().label, key)
      .release();
}

// A named replay's (name, module) item for the module entered last, whose
// path entry keeps its key alone. Out of line: the replay's loop is inlined.
[[gnu::noinline]] PyObject* Walker::make_deep_module_item(PyObject* module) {
  OwnedRef name = OwnedRef::steal(replayed_module_name(replay_.path.size() - 1));
  return name ? make_item(name.get(), module) : nullptr;
}

PyObject* Walker::replayed_module_name(std::size_t depth) {
  // The root's entry always holds its full name (a named replay's prefix is
  // exact str), and recorded keys are exact str: a walk meeting another
  // records nothing.
  return name_from_keys(
      depth, [&](std::size_t level) { return !replay_.path[level].key_only(); },
      [&](std::size_t level) { return replay_.path[level].label; });
}

// Member entry `entry` of a Yield, pinned already, named and filtered: 1 with
// `item` set, 0 when filtered out, -1 with an error set. The name is taken
// first, as torch builds it before a filter reads the value (requires_grad
// may run code, which may drop the entry and its key).
inline int Walker::replay_yield(const WalkRecord& record, std::uint32_t entry_index,
                                PyObject*& item) {
  const EntryRecord& entry = record.members[entry_index];
  OwnedRef value = OwnedRef::borrow(entry.value);
  OwnedRef name;
  if (options_.named) {
    const PathEntry& parent = replay_.path.back();
    PyObject* kept = kept_name(record.member_names, entry_index);
    if (kept != nullptr) {
      name = OwnedRef::borrow(kept);
    } else if (parent.key_only()) {  // a long name: built, not kept
      OwnedRef module_name = OwnedRef::steal(replayed_module_name(replay_.path.size() - 1));
      name = OwnedRef::steal(module_name ? join_name(module_name.get(), entry.key) : nullptr);
    } else {
      name =
          build_replayed_name(replay_.record->member_names, entry_index, parent.label, entry.key);
    }
    if (!name) {
      return -1;
    }
  }
  if (options_.trainable_only) {
    int trainable = requires_grad(value.get());
    if (trainable <= 0) {
      return trainable;
    }
  }
  if (!options_.named) {
    item = value.release();
    return 1;
  }
  item = make_item(name.get(), value.get());
  return item != nullptr ? 1 : -1;
}

// How many ops ahead the replay issues the loads an op will make (see
// prefetch_op; walker.h: why the default is 0). A training step's walk finds the
// model's objects evicted by the forward and backward; the record knows every
// address in advance, so their misses can be in flight together.
namespace {
int g_prefetch_distance = kDefaultPrefetchDistance;
bool g_straight_replays = true;

// Starts the cache-line fills op `op` will need: the module (its type, its
// __dict__ pointer, the pin's count), its dicts where versions are read from
// them (3.10/3.11; the 3.12+ watcher's stamp proves them in one load), and the
// object a yield will hold.
inline void prefetch_op(const WalkRecord& record, const ReplayOp& op) {
  const ModuleRecord* module = op.module;
  auto kind = static_cast<ReplayOpKind>(op.kind);
  if (module != nullptr) {
    __builtin_prefetch(module->module, 1);
#if PYPARAMS_VERSION_TAGS
    __builtin_prefetch(module->dict);
    __builtin_prefetch(module->members);
    __builtin_prefetch(module->children);
#endif
    if (kind == ReplayOpKind::EnterMembersYield) {
      __builtin_prefetch(record.members[module->first_member].value, 1);
    }
  }
  if (kind == ReplayOpKind::Yield || kind == ReplayOpKind::MembersYield) {
    __builtin_prefetch(record.members[op.entry].value, 1);
  }
}
}  // namespace

int prefetch_distance() noexcept {
  return g_prefetch_distance;
}

void set_prefetch_distance(int ops) noexcept {
  g_prefetch_distance = ops < 0 ? 0 : ops;
}

bool straight_replays() noexcept {
  return g_straight_replays;
}

void set_straight_replays(bool on) noexcept {
  g_straight_replays = on;
}

// One step of the replay: runs the record's program up to its next yield. 1
// with `item` set, 0 at the end, -1 with an error set, 2 when a check failed
// (the walk is now live, at exactly that point). Every read the live walk
// would make is checked at the moment it would make it; nothing else is read.
//
// The hot state lives in locals for the step (the record's arrays, the
// proof stamp, the pin cursor): a Py_INCREF may alias any counter reachable
// through `this`, and members would be reloaded after each one. The cursor is
// committed to replay_.pins before anything that reads the buffer or may run code.
//
// kNamed: a walk that yields (name, value) pairs, compiled apart so that its
// code (names on every Enter, pairs) costs the unnamed walks nothing.
//
// kBatch (replay_batch: an unnamed, unfiltered walk with dedup, in one native
// call): a yield appends its item to `sink` and the next step runs at once,
// pins and holds lent (PinBuffer::lend). They are taken (keep()) before the
// hand-over to the live walk, before a signal check that is due (after which
// the batch lends again), and when the sink is full (1: next() goes on).
template <bool kNamed, bool kBatch>
[[gnu::always_inline]] inline int Walker::replay_next(PyObject*& item, ItemSink* sink) {
  if (!poll_signals()) {  // before the step's first check: handlers may change the tree
    return -1;
  }
  if (kBatch) {
    replay_.pins.lend();  // no code runs from here until keep()
  }
  WalkRecord& record = *replay_.record;
  // A stamp at which every dict of the record had its version (watchers).
  // Another walk may prove the record again while code runs in this step:
  // the older stamp is still a true statement, only less often useful.
  // Whether no followed dict changed since is asked once: within a step (and
  // a batch's run) no code runs that could change one.
  const ChangeStamp proven_at = record.proven_at;
  bool all_proven = unchanged_since(proven_at);
  PinBuffer::Cursor pins = replay_.pins.cursor();
  MemberHashChecks hash_checks;  // (forgotten wherever code may run)
  // The module check, with its slow path: a written __dict__ is re-read
  // entry by entry (a lookup may run a key's __eq__: the pins are committed).
  auto module_unchanged = [&](ModuleRecord& recorded) __attribute__((always_inline)) {
    ModuleRead read = read_module(recorded, all_proven);
    if (read == ModuleRead::AsRecorded) [[likely]] {
      return true;
    }
    replay_.pins.commit(pins);
    hash_checks.forget();
    return read == ModuleRead::DictWritten && revalidate(recorded);
  };
  // A member dict's check, then (`hold`) its hold, as torch's `members` local
  // holds the mapping it started. A hold that fails (the member dict held
  // before is ours alone: PinBuffer) fails the next part.
  auto members_unchanged = [&](const ModuleRecord& module, std::uint32_t hold,
                               std::uint32_t& part) {
    if (!dict_unchanged(all_proven, module.members, module.members_version)) [[unlikely]] {
      return false;
    }
    if (hold != 0 && !replay_.pins.hold_members<kBatch>(module.members)) [[unlikely]] {
      ++part;
      return false;
    }
    return true;
  };
  // A children dict's check, then (`hold`) its hold until its frame is left.
  auto children_unchanged = [&](const ModuleRecord& module, std::uint32_t hold) {
    if (!dict_unchanged(all_proven, module.children, module.children_version)) [[unlikely]] {
      return false;
    }
    if (hold != 0) {
      PinBuffer::hold<kBatch>(pins, module.children);
    }
    return true;
  };
  // kBatch: poll_signals()'s count of steps, kept in a register in the run.
  std::uint32_t signal_steps = steps_since_signal_check_;
  // kBatch: `item` appended; 1 when the batch goes on with the next step, 0
  // when it stops there, -1 with an error set (a signal handler's).
  auto batch_goes_on = [&](PyObject* item, const ReplayOp* op) {
    *sink->at++ = item;
    const bool room = sink->at != sink->end;
    if (room && signal_steps + 1 < kSignalCheckInterval) [[likely]] {
      ++signal_steps;  // the next step's poll_signals(), not due
      return 1;
    }
    replay_.at = op + 1;
    replay_.pins.commit(pins);
    replay_.pins.keep();  // code may run from here on
    hash_checks.forget();
    steps_since_signal_check_ = signal_steps;
    if (!room) {
      return 0;
    }
    if (!poll_signals()) {  // the next step's, due: handlers are code
      return -1;
    }
    signal_steps = steps_since_signal_check_;
    all_proven = unchanged_since(proven_at);  // and then the batch goes on as a new one
    replay_.pins.lend();
    return 1;
  };
  const ReplayOp* const program_end = record.program.data() + record.program.size();
  const std::ptrdiff_t prefetch_distance = g_prefetch_distance;
  for (const ReplayOp* op = replay_.at;; ++op) {
    if (prefetch_distance > 0 && program_end - op > prefetch_distance) {
      prefetch_op(record, op[prefetch_distance]);
    }
    std::uint32_t part = 0;   // which part of a fused op failed
    std::uint32_t entry = 0;  // the member entry a yield yields
    bool yields = false;      // the op's checks passed and it yields `entry`
    auto kind = static_cast<ReplayOpKind>(op->kind);
    switch (kind) {
      case ReplayOpKind::PinRoot:
        if (kBatch || options_.remove_duplicate) {  // (a batch removes them)
          PinBuffer::pin<kBatch>(pins, root_.get(), PinBuffer::kModule);
        }
        continue;
      case ReplayOpKind::CheckModule:
        if (module_unchanged(*op->module)) [[likely]] {
          continue;
        }
        break;
      case ReplayOpKind::Enter:
      case ReplayOpKind::EnterMembers:
      case ReplayOpKind::EnterMembersYield: {
        ModuleRecord& module = *op->module;
        if (!module_unchanged(module)) [[unlikely]] {
          break;
        }
        if (kBatch || options_.remove_duplicate) {  // (a batch removes them)
          PinBuffer::pin<kBatch>(pins, module.module, PinBuffer::kModule);  // torch's memo holds it
        }
        // (Unnamed walks with dedup keep no path: go_live labels their frames
        // from the record, whose key copies outlive any key the model drops.)
        if (kNamed || (!kBatch && !options_.remove_duplicate)) {
          if (int entered = enter_path<kNamed>(record, *op); entered <= 0) [[unlikely]] {
            if (entered < 0) {
              replay_.pins.commit(pins);
              replay_.pins.keep();
              return -1;
            }
            break;
          }
        }
        if (kind == ReplayOpKind::Enter) {
          continue;
        }
        part = 1;
        if (!members_unchanged(module, op->hold, part)) [[unlikely]] {
          break;
        }
        if (kind == ReplayOpKind::EnterMembers) {
          continue;
        }
        entry = module.first_member;
        yields = true;
        break;
      }
      case ReplayOpKind::Members:
        if (members_unchanged(*op->module, op->hold, part)) [[likely]] {
          continue;
        }
        break;
      case ReplayOpKind::Children:
        // Its last read in a frame about to be left: the dict is let go, or
        // the live walk goes on from here, to free it where it would.
        if (children_unchanged(*op->module, op->hold) &&
            (op->leave == 0 || replay_.pins.leave<kBatch>(pins))) [[likely]] {
          continue;
        }
        break;
      case ReplayOpKind::LeaveRun: {
        // The frames of a deep path left one after another, in one loop.
        ModuleRecord* const* leaving = record.leave_runs.data() + op->entry;
        for (; part < op->extent; ++part) {
          const ModuleRecord& module = *leaving[part];
          if (!children_unchanged(module, 0) || !replay_.pins.leave<kBatch>(pins)) [[unlikely]] {
            break;
          }
        }
        if (part == op->extent) [[likely]] {
          continue;
        }
        break;
      }
      case ReplayOpKind::MembersModuleChildren:
      case ReplayOpKind::ModuleChildren: {
        ModuleRecord& module = *op->module;
        if (kind == ReplayOpKind::MembersModuleChildren) {
          if (!members_unchanged(module, 0, part)) [[unlikely]] {
            break;
          }
          part = 1;
        }
        if (!module_unchanged(module)) [[unlikely]] {
          break;
        }
        ++part;
        if (children_unchanged(module, op->hold)) [[likely]] {
          continue;
        }
        break;
      }
      case ReplayOpKind::Yield:
        entry = op->entry;
        yields = true;
        break;
      case ReplayOpKind::MembersYield:
        if (!members_unchanged(*op->module, 0, part)) [[unlikely]] {
          break;
        }
        entry = op->entry;
        yields = true;
        break;
      case ReplayOpKind::YieldModule: {
        PyObject* module = op->module->module;
        if (kBatch) {
          Py_INCREF(module);
          if (int goes_on = batch_goes_on(module, op); goes_on <= 0) [[unlikely]] {
            return goes_on < 0 ? -1 : 1;
          }
          continue;
        }
        replay_.at = op + 1;
        replay_.pins.commit(pins);
        if (kNamed) {
          const PathEntry& entered = replay_.path.back();
          item = !entered.key_only() ? make_item(entered.label, module)
                                     : make_deep_module_item(module);
        } else {
          item = OwnedRef::borrow(module).release();
        }
        return item != nullptr ? 1 : -1;
      }
      case ReplayOpKind::Duplicate: {
        // A duplicate when recorded: still one unless its class (or instance)
        // now brings a named_modules override, which the live walk would call.
        PyObject* child = record.children[op->entry].value;
        if ((!kBatch && !options_.remove_duplicate) || !is_module(child)) {
          break;
        }
        // Only where the lookup runs no user code, and torch's memo would find
        // it by identity; else the live walk asks.
        if (!module_hash_is_identity(child) ||
            !override_ruled_out_without_code(child, Method::NamedModules)) {
          break;
        }
        continue;
      }
      case ReplayOpKind::MemberDuplicate:
        // (Yielded and pinned before, or held by its member dict, checked in this step.)
        if (hash_checks(record.members[op->entry].value)) [[likely]] {
          continue;
        }
        break;
      case ReplayOpKind::Live:
        break;
      case ReplayOpKind::End:
        replay_.pins.commit(pins);
        if (unchanged_since(replay_.stamp)) {
          record.proven_at = replay_.stamp;  // every dict checked, and none changed since
        }
        return 0;
      default:
        Py_UNREACHABLE();  // every kind is above: no range check before the jump
    }
    // Member entry `entry`, the step's yield, unless torch's `v in memo` would
    // run code hashing it (its class, or Tensor.__hash__, changed since).
    if (yields && hash_checks(record.members[entry].value)) [[likely]] {
      PyObject* value = record.members[entry].value;
      if (kBatch) {  // unnamed, unfiltered, with dedup
        PinBuffer::pin<true>(pins, value, PinBuffer::kMember);
        Py_INCREF(value);
        if (int goes_on = batch_goes_on(value, op); goes_on <= 0) [[unlikely]] {
          return goes_on < 0 ? -1 : 1;
        }
        continue;
      }
      replay_.at = op + 1;
      if (options_.remove_duplicate) {
        PinBuffer::pin(pins, value, PinBuffer::kMember);
      }
      replay_.pins.commit(pins);
      if (!kNamed && !options_.trainable_only) [[likely]] {
        Py_INCREF(value);
        item = value;
        return 1;
      }
      PyObject* yielded_item = nullptr;  // its address escapes: not `item`'s register
      int yielded = kNamed ? replay_yield(record, entry, yielded_item)
                           : replay_filtered_yield(record, entry, yielded_item);
      if (yielded == 0) {
        continue;  // filtered out; the next op was compiled as a new step: it checks again
      }
      item = yielded_item;
      return yielded;
    }
    // A check failed (or the record stops vouching) at this part of this op.
    if (yields) {
      part = replay_op_parts(*op) - 1;  // the yield: its op's last part
    }
    replay_.pins.commit(pins);
    replay_.pins.keep();  // the live walk runs code: lent references are taken first
    if (kBatch) {
      steps_since_signal_check_ = signal_steps;
    }
    return go_live(unfused_op_index(record.program,
                                    static_cast<std::size_t>(op - record.program.data()), part));
  }
}

// The replay of named walks: out of line, so that the unnamed one inlined
// into next() keeps its state in registers.
[[gnu::noinline]] int Walker::replay_next_named(PyObject*& item) {
  return replay_next<true, false>(item, nullptr);
}

// The whole program's checks made first, in one loop (WalkRecord::Straight):
// the modules in the order they were entered, each before its dicts, so that
// every pointer followed is held by something already proven unchanged. With
// no code running until the walk's end, and no signal check due before it, a
// replay run op by op would make these same checks, pass them, and yield the
// recorded items; its pins and holds (lent) would be taken by nobody. So the
// items are appended in one loop. False, having taken no reference, where a
// check fails (a __dict__ written for another reason included: the op-by-op
// run re-checks it) or the walk is too long.
bool Walker::replay_straight(ItemSink& sink) {
  WalkRecord& record = *replay_.record;
  const WalkRecord::Straight& straight = record.straight;
  const std::size_t steps = straight.items.size() + 1;  // a step per item, and the end
  if (!straight.usable || replay_.at != record.program.data() ||
      steps_since_signal_check_ + steps >= kSignalCheckInterval ||
      static_cast<std::size_t>(sink.end - sink.at) < straight.items.size()) {
    return false;
  }
  using Straight = WalkRecord::Straight;
  const bool all_proven = unchanged_since(record.proven_at);
  for (const Straight::Read& read : straight.reads) {
    const ModuleRecord& module = *read.module;
    if (read_module(module, all_proven) != ModuleRead::AsRecorded) {
      return false;
    }
    if (all_proven) {
      continue;
    }
    if (((read.what & Straight::kMembers) != 0 &&
         current_version(module.members) != module.members_version) ||
        ((read.what & Straight::kChildren) != 0 &&
         current_version(module.children) != module.children_version)) {
      return false;
    }
  }
  // (A duplicate's first occurrence was read above, whose class and __dict__
  // decide this too: made as the Duplicate op makes it.)
  for (std::uint32_t entry : straight.duplicates) {
    PyObject* child = record.children[entry].value;  // its parent's _modules holds it
    if (!is_module(child) || !override_ruled_out_without_code(child, Method::NamedModules)) {
      return false;
    }
  }
  // Members torch's memo hashes: by identity still (the Yield ops' check; a
  // duplicate is its first occurrence, among the items, and no code runs
  // between them here). A walk of modules read their classes above.
  const bool members_kind = options_.kind != Kind::Modules;
  PyObject** const first = sink.at;
  MemberHashChecks hash_checks;
  for (PyObject* item : straight.items) {
    if (members_kind && !hash_checks(item)) [[unlikely]] {
      for (PyObject** taken = first; taken != sink.at; ++taken) {
        Py_DECREF(*taken);  // (their dicts, checked above, hold them: no object goes)
      }
      sink.at = first;
      return false;
    }
    Py_INCREF(item);
    *sink.at++ = item;
  }
  steps_since_signal_check_ += static_cast<std::uint32_t>(steps);
  if (unchanged_since(replay_.stamp)) {
    record.proven_at = replay_.stamp;  // as the End op: every dict checked, none changed since
  }
  return true;
}

bool Walker::replay_batch(ItemSink& sink) {
  if (phase_ == Phase::Ready && !ready()) {
    return false;
  }
  if (phase_ != Phase::Replaying || options_.named || options_.trainable_only ||
      !options_.remove_duplicate || sink.at == sink.end) {
    return true;  // the caller's next() takes every step
  }
  if (g_straight_replays && replay_straight(sink)) {
    clear();
    return true;
  }
  PyObject* unused = nullptr;
  int replayed = replay_next<false, true>(unused, &sink);
  if (replayed == 0) {
    clear();
  } else if (replayed < 0) {
    fail();
    return false;
  }
  return true;  // 1: the sink is full; 2: the walk went live. next() goes on
}

// An unnamed walk's filtered yield, out of the loop for the same reason.
[[gnu::noinline]] int Walker::replay_filtered_yield(const WalkRecord& record, std::uint32_t entry,
                                                    PyObject*& item) {
  return replay_yield(record, entry, item);
}

PyObject* Walker::next() {
  if (phase_ == Phase::Replaying) [[likely]] {  // a warm walk's steps after its first
    // The item of the inlined unnamed loop stays in a register: the named
    // loop, out of line, gets a slot of its own whose address it takes.
    PyObject* item = nullptr;
    int replayed;
    if (options_.named) {
      PyObject* named_item = nullptr;
      replayed = replay_next_named(named_item);
      item = named_item;
    } else {
      replayed = replay_next<false, false>(item, nullptr);
    }
    if (replayed == 1) [[likely]] {
      return hold_last(item);
    }
    if (replayed == 0) {
      clear();
      return nullptr;
    }
    if (replayed < 0) {
      return fail();
    }
    // 2: the record could not vouch for the next read; the live walk goes on.
  }
  return hold_last(next_unreplayed());
}

// `parent + "." + key` for a named replay whose table lacks it: built and
// kept in the table (`names[index]`) to be handed out again (str is immutable).
OwnedRef Walker::build_replayed_name(RawVector<PyObject*>& names, std::size_t index,
                                     PyObject* parent, PyObject* key) {
  OwnedRef built = OwnedRef::steal(join_name(parent, key));
  // Short names only: a deep chain's names grow with depth, and keeping them
  // all would cost memory quadratic in it. Never the key itself (what "" + key
  // is): the cache holds pyparams' own strings, no reference to the model's.
  if (built && names_table_ours() && built.get() != key &&
      PyUnicode_GET_LENGTH(built.get()) <= kMaxKeptNameLength) {
    names[index] = OwnedRef::borrow(built.get()).release();
  }
  return built;
}

}  // namespace pyparams
