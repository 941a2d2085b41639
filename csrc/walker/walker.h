// The native walk over a torch.nn.Module tree: an explicit stack, no recursion.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "cache/pin_buffer.h"
#include "cache/walk_cache.h"
#include "support/hash_memo.h"
#include "support/item_cursor.h"
#include "support/owned_ref.h"
#include "support/pointer_set.h"
#include "support/pymem_allocator.h"
#include "support/python_names.h"
#include "walker/dispatch.h"
#include "walker/dotted_names.h"
#include "walker/module_attributes.h"

namespace pyparams {

// The attribute that holds a member walk's entries: `_parameters` or `_buffers`.
inline PyObject* member_attribute(Kind kind) {
  return kind == Kind::Buffers ? names().buffers : names().parameters;
}

// How many ops ahead a replay starts the loads of the op it will run (0: none).
// Off by default: measured at 0 to 32 ops, hot and after sweeping 64 MiB and
// 1 GiB, no distance gained beyond the noise (docs/performance.md: the loads
// come from the record's addresses, independent of one another, and the core
// already overlaps them). The setter is for measuring it on another machine.
constexpr int kDefaultPrefetchDistance = 0;
int prefetch_distance() noexcept;
void set_prefetch_distance(int ops) noexcept;

// Whether an eager replay tries its whole program's checks at once first
// (Walker::replay_straight); on by default. The switch is for the tests,
// which run the same walks both ways.
bool straight_replays() noexcept;
void set_straight_replays(bool on) noexcept;

// A walk's own buffers (pymalloc: small ones cost no system allocation).
template <typename T>
using WalkVector = std::vector<T, PyMemAllocator<T>>;

// The small buffers finished replays left for the next (their pins, their
// path): bytes held (counted in the cache's bytes), and their release.
std::size_t spare_buffer_bytes() noexcept;
void release_spare_buffers() noexcept;

// (Laid out to stay 12 bytes: the iterator must fit a pymalloc block.)
struct WalkOptions {
  Kind kind = Kind::Parameters;
  bool recurse = true;           // false: the root module's own entries only
  bool remove_duplicate = true;  // torch's memo: each object once
  bool trainable_only = false;   // keep entries whose requires_grad is True
  bool named = false;            // yield (name, object) tuples
  // Which of them the caller passed: an override of the method the public
  // function mirrors is called with those only, as `m.X(...)` would be.
  bool recurse_given = false;
  bool remove_duplicate_given = false;
  bool prefix_given = false;
  // Dispatch::Public for the method the public function mirrors; a faithful
  // replacement of torch's method X starts below X (or super() would loop).
  Dispatch dispatch = Dispatch::Public;
};

// Reproduces torch.nn.Module's base-class algorithm (named_modules feeding
// _named_members) step by step, reading each mapping at the moment torch's
// generators would, so mutations made between steps are seen the same way.
// Where a class or instance overrides a method on torch's dispatch chain, the
// override is called where torch would call it and its items are used as-is.
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
  // An override of the very method the walk mirrors is called here, as the
  // user's own call would; deeper ones when the walk reaches them.
  bool start(PyObject* root, PyObject* prefix, const WalkOptions& options);

  // The next item as a new reference, or nullptr: at the end with no error
  // set, or with an error set. Either way a walk that returned nullptr is
  // finished and keeps returning nullptr, as an exhausted generator does.
  PyObject* next();  // (replay.cpp: a warm walk's steps replay there, inline)

  // Where replay_batch appends items: [at, end), `at` advanced past each.
  struct ItemSink {
    PyObject** at;
    PyObject** end;
  };
  // For an eager walk (one native call, no code of the caller between its
  // steps): readies the walk and, while it replays, runs its steps in a row,
  // appending each item (a new reference) to `sink`. next() goes on from
  // where it stopped: the sink full, the walk live or ended. Runs no code but
  // the replay's own while its pins are lent (signal handlers run after they
  // are taken). False with an error set (the walk then ended).
  bool replay_batch(ItemSink& sink);

  // For list(walk): before the first step of a walk that will replay, how
  // many items the record yielded (filters may yield fewer); -1 when unknown.
  Py_ssize_t length_hint() const;

  // True once the walk ended (or never started): an exhausted generator.
  bool finished() const { return phase_ == Phase::Finished; }

  // What an override of the very method the walk mirrors returned at
  // start(), when the public function returns it as is (as `m.X()` does: a
  // list, None, any object); the walker then ends. nullptr otherwise.
  PyObject* take_override_result();

  // Whether torch's generator for this walk, after `steps` next() calls
  // (counted up to 2), is suspended inside a `yield from`: named_parameters
  // and named_buffers from their first item on, named_modules from its
  // second (the root it yields itself). Not known for an override's items.
  bool mirrors_yield_from(int steps) const {
    if (phase_ == Phase::Finished || phase_ == Phase::Delegated || !options_.named ||
        options_.trainable_only) {
      return false;
    }
    return steps >= (options_.kind == Kind::Modules ? 2 : 1);
  }

  // PEP 380, where an override's iterator supplies the walk's items (a
  // child's named_modules, the root's _named_members): torch consumes it with
  // a `yield from`. The one torch's outermost generator reaches through
  // `yield from`s alone (named_modules; named_parameters and named_buffers
  // over an overriding _named_members), which send(), throw() and close()
  // are handed to; else nullptr.
  PyObject* yield_from_target() const {
    bool all_yield_from = options_.named && !options_.trainable_only &&
        (phase_ == Phase::Delegated || options_.kind == Kind::Modules);
    return all_yield_from ? closed_with_walk() : nullptr;
  }
  // The one whose close() torch's generators call when the walk is closed,
  // thrown into or freed before its end (a `yield from` waits on it; an
  // iterator a `for` loop reads is only let go of), or nullptr.
  PyObject* closed_with_walk() const {
    if (phase_ == Phase::Delegated) {
      return dispatch_.yield_from ? dispatch_.delegate.get() : nullptr;
    }
    if (phase_ != Phase::Live || live_.stack.size() < 2) {
      return nullptr;  // (an override at the root: its caller's loop is a `for`)
    }
    return live_.stack.back().overridden.get();
  }
  // closed_with_walk()'s close(), as torch's generators call it when freed
  // (support/delegated_iterator.h: close_delegated_as_freed). Runs user code.
  void close_delegated_unraisable();
  // Whether the generator that waits on yield_from_target() is the walk's own
  // outermost one (the root's), not one of a module below it.
  bool yield_from_in_root() const { return phase_ == Phase::Delegated || live_.stack.size() == 2; }
  // The `yield from` waiting on `target` returned: the walk goes on after it
  // (named_X over _named_members then ends). Nothing where `target` is no
  // longer what the walk waits on (code run meanwhile moved it on).
  void end_yield_from(PyObject* target);
  // The generator that waits on `target` in a `yield from`, below the root's,
  // dropped by the generator above it (its throw() could not look up the
  // iterator's `throw`): the iterator is closed as that generator's finalizer
  // closes it, and the walk then stands where the generator above waited on
  // it. Runs user code; to be run marked executing. Nothing where `target`
  // is not what such a generator waits on.
  void drop_delegating_generator(PyObject* target);

  // torch's generator closing the one its `yield from` waits on (a thrown
  // GeneratorExit it then refuses): for named_modules the root's current
  // child's subtree is dropped and the walk goes on with its next child;
  // named_parameters and named_buffers end. False with an error set (the
  // walk then ended).
  bool close_delegated_generator();

  int traverse(visitproc visit, void* arg) const;
  // Drops every reference; the walk becomes finished.
  void clear() noexcept;

 private:
  struct ModuleFrame {
    OwnedRef module;
    // The module's full name (full_name), or the key it was entered under,
    // from which the name is built when needed (frame_name). The root's
    // frame: the prefix in named walks, nothing in unnamed ones.
    OwnedRef name;
    // `name` is the full name: in a named walk's frames, but for those whose
    // name is longer than kMaxKeptNameLength and made of exact str only (a
    // deep chain's: keeping every level's full name would cost memory
    // quadratic in the depth); in an unnamed walk's where the key, or an
    // ancestor's, is no exact str (torch builds every name, so its `+` ran).
    bool full_name = false;
    // A named walk's frame that keeps its key alone: its full name's length
    // (as Walker::PathEntry; a full name's is its own).
    Py_ssize_t key_only_length = 0;
    ItemCursor children;  // over module._modules, started when first needed
    bool children_started = false;
    // The value of the children entry read last: torch's `module` loop
    // variable, rebound only once the next entry is read. So a child that only
    // the walk still holds is freed (its finalizers run) after its next
    // sibling was read, not before.
    OwnedRef current_child;
    // Set when module.named_modules is overridden: its (name, module) items
    // replace this module's whole subtree.
    OwnedRef overridden;
    // Walk cache: the module's ModuleRecord, and the children entries read.
    std::uint32_t record = 0;
    std::uint32_t entries_read = 0;
  };

  // next() when no replay runs: dispatches on the phase.
  PyObject* next_unreplayed();
  PyObject* first_step();
  // The first step's readying: the root's deeper overrides, then the cache.
  // False with an error set (the walk then ended).
  bool ready();
  PyObject* next_live();
  // 1 with `item` set to the next entry of the current module's members, 0
  // when they are exhausted, -1 with an error set.
  int next_member(PyObject*& item);
  // 1 with `module` and `name` filled by the next module of the pre-order
  // walk, 0 at its end, -1 with an error set.
  int next_module(OwnedRef& module, OwnedRef& name);
  int next_overridden(ModuleFrame& frame, OwnedRef& module, OwnedRef& name);
  int descend(OwnedRef child, OwnedRef key, OwnedRef& module, OwnedRef& name);
  // `prefix`: the child's name when descend built it already, else null.
  int call_named_modules_override(PyObject* callable, OwnedRef child, OwnedRef key,
                                  OwnedRef prefix);
  // True when joining `key` to the name of the top frame runs user code (a
  // key, or an ancestor's, that is no exact str): an unnamed walk then
  // builds the name too, where torch does.
  bool join_runs_code(PyObject* key) const;
  // Named walks: true when the frame of a child of the top frame reached
  // under `key` keeps the key alone (see ModuleFrame::full_name), with
  // `length` set to its full name's length.
  bool name_can_wait(PyObject* key, Py_ssize_t& length) const;
  // live_.members_name set to the full name of the module whose members are
  // read, where none was kept: built as torch built it. False with an error set.
  bool ensure_members_name();
  PyObject* next_delegated();
  bool dispatch_root(bool mirrored_only);
  bool delegate(PyObject* callable, Dispatch level);
  bool start_members(PyObject* module, PyObject* name, bool generic_name);
  bool start_children(ModuleFrame& frame);
  bool push(PyObject* module, OwnedRef name, OwnedRef overridden = OwnedRef());
  // Recording: true when the root still has no override on torch's dispatch
  // chain from the walk's first level on, asked after its versions were taken
  // (the mirrored level was asked at the call, before them).
  bool root_has_no_override_since_recorded();
  // The method asked at `level` of torch's dispatch chain for this walk, or
  // false when that level does not apply to it.
  bool method_at(Dispatch level, Method& method) const;
  void pop();
  bool ensure_memo();
  int hashed_memo_admits(PyObject* object, bool member);
  PyObject* frame_name(std::size_t depth);
  // The name torch builds for a child of the top frame reached under `key`
  // (its `+` may be user code). A new reference, or nullptr with an error set.
  PyObject* child_name(PyObject* key);

  // The warm-walk cache (walk_cache.h). A walk either replays a record,
  // proving by versions at every read that nothing it reads has changed, or
  // records what it reads for the next walk of the same root.
  bool begin_cached_walk();
  // True when the cache proves the root has no override on the rest of
  // torch's dispatch chain (from dispatch_.next on): dispatch_root would find
  // none, so it need not look.
  bool root_overrides_ruled_out();
  template <bool kNamed, bool kBatch>
  inline int replay_next(PyObject*& item, ItemSink* sink);
  int replay_next_named(PyObject*& item);
  // replay_batch's first resort: the whole walk in one loop where the
  // record's checks all pass at once. True with every item appended.
  bool replay_straight(ItemSink& sink);
  // A recorded module whose __dict__ was written since (to its entries only)
  // is re-checked entry by entry; true when it still reads as recorded.
  bool revalidate(ModuleRecord& recorded);
  // Enter ops: the path's entry at the op's depth (the module's name or key;
  // the module itself where no dedup set pins it). 1, 0 when the walk must go
  // live (leaving a module only the path held would free it, and run code),
  // -1 with an error set.
  template <bool kNamed>
  inline int enter_path(const WalkRecord& record, const ReplayOp& op);
  inline int replay_yield(const WalkRecord& record, std::uint32_t entry, PyObject*& item);
  int replay_filtered_yield(const WalkRecord& record, std::uint32_t entry, PyObject*& item);
  int go_live(std::size_t unfused_op) noexcept;
  inline bool names_table_ours() const;
  // A named replay's name kept in the record's table (`names[index]`), or null.
  inline PyObject* kept_name(const RawVector<PyObject*>& names, std::size_t index) const;
  // The full name of the module of path entry `depth` (name_from_keys).
  PyObject* replayed_module_name(std::size_t depth);
  // The full name at level `depth` of a path whose levels each hold their
  // full name (`holds_name(level)`, true at level 0) or the key they were
  // entered under, `label(level)`: live frames, a replay's path entries. Built
  // from the nearest full name above (or deep_name_, while its level stands)
  // and the keys below it, all exact str: no code runs. The name built is
  // kept as deep_name_. A new reference, or nullptr with an error set.
  template <typename HoldsName, typename Label>
  PyObject* name_from_keys(std::size_t depth, HoldsName holds_name, Label label);
  PyObject* make_deep_module_item(PyObject* module);
  PyObject* unkept_path_label(std::size_t index, PyObject* key, Py_ssize_t& key_only_length);
  OwnedRef build_replayed_name(RawVector<PyObject*>& names, std::size_t index, PyObject* parent,
                               PyObject* key);
  void unpin_all() noexcept;
  // Room for `entries` path entries, in the spare path when it has it.
  void reserve_path(std::size_t entries);
  bool record_enter(PyObject* module);
  void record_mapping(std::uint32_t index, PyObject* mapping, bool from_dict, bool children);
  void abandon_recording() noexcept;
  void finish_recording();
  // nullptr with an error set, after finishing the walk.
  PyObject* fail() noexcept;
  // A named walk's (name, value) pair; nullptr with an error set.
  PyObject* make_item(PyObject* name, PyObject* value) {
    PyObject* pair = last_pair_.get();
    if (pair != nullptr && Py_REFCNT(pair) == 1) [[likely]] {
      return refill_pair(pair, name, value);
    }
    return make_new_pair(name, value);
  }
  PyObject* refill_pair(PyObject* pair, PyObject* name, PyObject* value);
  // Unnamed walks without dedup hold the item they yield (last_item_),
  // dropping the one before; with dedup the seen set holds it already.
  PyObject* hold_last(PyObject* item) {
    if (options_.remove_duplicate || options_.named || item == nullptr) [[likely]] {
      return item;
    }
    std::exchange(last_item_, OwnedRef::borrow(item)).reset();
    return item;
  }
  PyObject* make_new_pair(PyObject* name, PyObject* value);
  // named_modules: torch's generators keep no pair they yielded, only the
  // module's frame. The pair kept for refilling (when only this walk holds it)
  // lets `module` go as its frame ends, where the caller still holds it: no
  // code runs, and the module goes when torch's frames let it go.
  void let_pair_keep_no_module(PyObject* module);
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

  // The one state of a walk: where its next item comes from.
  enum class Phase : std::uint8_t {
    Finished,   // ended, failed or never started: next() returns nullptr
    Ready,      // started; the root's deeper levels are asked at the first next()
    Delegated,  // an override at the root supplies every item (next_delegated)
    Replaying,  // a record's program runs, every read so far as recorded (replay.cpp)
    Live,       // the live walk (live_walk.cpp), recording what it reads or not
  };

  // Asking the root's methods on torch's dispatch chain (root_dispatch.cpp).
  struct RootDispatch {
    OwnedRef delegate;                     // Delegated: the override's items
    Dispatch mirrored = Dispatch::Public;  // the level the public function mirrors
    Dispatch next = Dispatch::Public;      // levels not yet asked start here
    bool pairs = false;                    // Delegated: they are (name, value) pairs
    // Delegated: `delegate` is still what the override returned, not yet
    // iterated (its iter() is asked at the first next(), as `list(m.X())` asks).
    bool as_returned = false;
    // Delegated: torch's caller consumes `delegate` with `yield from` (an
    // overriding _named_members under named_parameters, named_buffers).
    bool yield_from = false;
  };

  // The live walk's state (live_walk.cpp): torch's generators, made explicit.
  struct LiveWalk {
    std::vector<ModuleFrame, PyMemAllocator<ModuleFrame>> stack;
    ItemCursor members;     // the current module's _parameters / _buffers
    OwnedRef members_name;  // that module's name: named walks, and unnamed ones that join with `+`
    // The member mapping last started, held until the next one is read, as
    // torch's `members` local holds it (its cursor lets go at its end).
    OwnedRef members_mapping;
    // The module whose members were started last: torch's `module` variable
    // in `_named_members`, let go once named_modules produced the next one.
    OwnedRef members_module;
    bool root_entered = false;  // (the flags side by side: the iterator stays under 512 bytes)
    bool members_active = false;
    // The module came from an override, or its name (or a key on its path)
    // is no exact str: its name may be any object, joined with Python's `+`
    // (so unnamed walks too build every name, as torch does).
    bool members_generic_name = false;
    // torch's `memo` set, made once a named_modules override must be handed
    // one; from then on it, not seen_modules, decides module duplicates.
    OwnedRef memo;
    // torch's memos as they hash: made once something in one hashes by code
    // of its own (memo_hash.h); from then on each, not seen_members or
    // seen_modules, decides those duplicates (`memo`, once made, the modules').
    struct HashedMemos {
      HashMemo members;
      HashMemo modules;
      bool members_active = false;
      bool modules_active = false;
    };
    std::unique_ptr<HashedMemos> hashed;
    // The item an overriding named_modules yielded for the module just returned.
    OwnedRef override_item;
    PointerSet seen_members{PointerSet::Ownership::Strong};
    PointerSet seen_modules{PointerSet::Ownership::Strong};
    PointerSet on_stack{PointerSet::Ownership::Borrowed};  // cycle guard without memo
  };

  // What the live walk notes for the warm-walk cache (recording.cpp).
  struct Recorder {
    RecordPtr record;       // set while this walk records what it reads
    bool counting = false;  // a first walk of its root: note its size at the end
    std::size_t modules_entered = 0;
    std::uint32_t last_entered = 0;    // the ModuleRecord of the module entered last
    std::uint32_t members_record = 0;  // the ModuleRecord whose members are being read
  };

 public:  // (the spare path, replay.cpp, is one of these at namespace scope)
  // The modules on the replay's path, the root's first, as the live walk's
  // frames (and torch's generator frames) hold them: each with its label (a
  // named walk's full name, else the key it was reached under; strong
  // references) and, without dedup (where no pin holds it), the module itself.
  // Deeper entries linger until the next Enter at their depth replaces them.
  // (Unnamed walks with dedup keep no path: their pins hold the modules, and
  // go_live labels frames from the record: WalkRecord::key_copies.)
  struct PathEntry {
    PyObject* label;
    PyObject* module;
    // Named replays: 0 where the label is the module's full name; else the
    // label is the key alone (the full name is longer than kMaxKeptNameLength
    // and built where it is used, as the live walk's frames do) and this is
    // the full name's length.
    Py_ssize_t key_only_length;
    bool key_only() const { return key_only_length != 0; }
    Py_ssize_t name_length() const {
      return key_only_length != 0 ? key_only_length : PyUnicode_GET_LENGTH(label);
    }
  };

 private:
  // A replay's state (replay.cpp; the hand-over to the live walk: handover.cpp).
  struct Replay {
    RecordPtr record;   // Replaying: the record whose program runs
    RecordPtr retired;  // a record the replay left (kept until the walk ends: still read)
    const ReplayOp* at = nullptr;  // the next op of its program
    ChangeStamp stamp = 0;         // the change stamp when the replay began
    WalkVector<PathEntry> path;
    // Named replays: names_cached when the names come from the record's cache,
    // under the record's names_generation at that moment.
    bool names_cached = false;
    std::uint64_t names_generation = 0;
    // What it holds: the modules it entered and the members it yielded (with
    // remove_duplicate), as the live walk's dedup sets would, and, while their
    // frames are open, the dicts a later step reads again.
    PinBuffer pins;
  };

  WalkOptions options_;
  Phase phase_ = Phase::Finished;
  OwnedRef root_;
  OwnedRef root_name_;
  RootDispatch dispatch_;
  LiveWalk live_;
  Recorder recorder_;
  Replay replay_;
  // The (name, value) pair yielded last, refilled when the consumer let it go.
  OwnedRef last_pair_;
  // Unnamed walks without dedup: the item yielded last, which torch's
  // generator holds in its loop variable until the next one.
  OwnedRef last_item_;
  std::uint32_t steps_since_signal_check_ = 0;
  int record_slot_ = 0;  // which of the root's records this walk reads or writes
  // The full name built last for a live frame (frame_name) or a replay's path
  // entry (replayed_module_name) that keeps its key alone, kept while that
  // frame or entry stands: the names below it start from it. One name, so a
  // deep walk's memory stays linear in its depth. (A walk replays, then walks
  // live: the hand-over drops it.)
  OwnedRef deep_name_;
  std::uint32_t deep_name_depth_ = 0;
  // Nothing held since the last clear() (or ever): clear() has no work.
  bool settled_ = true;
  // The error the walk fails with came from the next() of an override's
  // iterator: it unwinds the `yield from` waiting on it, which closes nothing.
  // Any other error is raised above that `yield from` (a `for` loop's body),
  // and torch's generators close the iterator as they are freed (fail()).
  bool delegated_raised_ = false;
};

template <typename HoldsName, typename Label>
PyObject* Walker::name_from_keys(std::size_t depth, HoldsName holds_name, Label label) {
  auto deep_at = [&](std::size_t level) { return deep_name_ && deep_name_depth_ == level; };
  std::size_t base = depth;
  while (!holds_name(base) && !deep_at(base)) {
    --base;
  }
  PyObject* base_name = deep_at(base) ? deep_name_.get() : label(base);
  if (base == depth) {
    Py_INCREF(base_name);
    return base_name;
  }
  PyObject* name =
      join_names(base_name, depth - base, [&](std::size_t i) { return label(base + 1 + i); });
  if (name != nullptr) {
    deep_name_ = OwnedRef::borrow(name);  // (the one it replaces is a str: no code runs)
    deep_name_depth_ = static_cast<std::uint32_t>(depth);
  }
  return name;
}

}  // namespace pyparams
