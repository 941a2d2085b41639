// The warm-walk cache: what a complete walk of a root read, kept so a later
// walk of the same unchanged root can replay it, proving each step by versions.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cache/dict_versions.h"
#include "cache/replay_op.h"
#include "support/gil_shared.h"
#include "support/pymem_allocator.h"
#include "walker/module_attributes.h"

namespace pyparams {

// One module a walk entered, and what it read from it: the class (and its
// version), the instance __dict__, the member dict and the children dict,
// each with the version it had when read.
struct ModuleRecord {
  PyObject* module = nullptr;  // all pointers borrowed: the cache owns nothing
  PyTypeObject* type = nullptr;
  unsigned int type_version = 0;
  PyObject* dict = nullptr;
  Version dict_version = 0;
  // Where the type keeps the instance __dict__ pointer, in bytes from the
  // object (valid for `type` only): one load instead of _PyObject_GetDictPtr.
  Py_ssize_t dict_offset = 0;
  PyObject* members = nullptr;  // _parameters / _buffers, null when not read
  Version members_version = 0;
  PyObject* children = nullptr;  // _modules, null when not read
  Version children_version = 0;
  std::uint32_t first_member = 0;
  std::uint32_t member_count = 0;
  std::uint32_t first_child = 0;
  std::uint32_t child_count = 0;
};

// How a recorded module reads now: as recorded (the same class at the same
// version, so the same attribute lookup and no new override, and the same
// instance __dict__ at the same version); its __dict__ written since (to be
// re-checked entry by entry); or changed. The module is alive: its parent's
// children dict was checked in this step.
enum class ModuleRead { AsRecorded, DictWritten, Changed };

// `all_proven`: as for dict_unchanged.
inline ModuleRead read_module(const ModuleRecord& recorded, bool all_proven) {
  PyObject* module = recorded.module;
  // The versions are read through the record's pointers, equal to the live
  // ones once compared: their loads need not wait for the module's own.
  PyTypeObject* type = recorded.type;
  if (Py_TYPE(module) != type || !type_version_is(type, recorded.type_version)) {
    return ModuleRead::Changed;
  }
  // The same type, so the same place for the __dict__ pointer (a managed
  // dict not materialized reads as null, or 3.12's tagged inline values,
  // there: not the recorded dict).
  PyObject* dict = recorded.dict;
  if (*reinterpret_cast<PyObject**>(reinterpret_cast<char*>(module) + recorded.dict_offset) !=
      dict) {
    return ModuleRead::Changed;
  }
  return dict_unchanged(all_proven, dict, recorded.dict_version) ? ModuleRead::AsRecorded
                                                                 : ModuleRead::DictWritten;
}

// One entry of a member or children dict, in PyDict_Next order, with the
// cursor position after it (to resume the live walk exactly there).
struct EntryRecord {
  PyObject* key = nullptr;
  PyObject* value = nullptr;
  Py_ssize_t position_after = 0;
  // Children: the ModuleRecord the walk entered for it, kNotEntered when it
  // was None or a duplicate. Members: unused.
  std::int32_t entered = kNotEntered;
  // Members: a first occurrence, which the walk yielded (unfiltered); false
  // for None and duplicates. Children: unused.
  bool yielded = false;

  static constexpr std::int32_t kNotEntered = -1;
};

template <typename T>
using RawVector = std::vector<T, PyMemRawAllocator<T>>;

struct WalkRecord : GilCounted {
  RawVector<ModuleRecord> modules;  // in the order the walk entered them (parents first)
  RawVector<EntryRecord> members;
  RawVector<EntryRecord> children;
  std::uint64_t epoch = 0;  // the dispatch epoch the walk ran under
  // The first level of torch's dispatch chain the walk checked at the root
  // (a Dispatch): from there on, the root had no override.
  int dispatch_from = 0;
  std::uint32_t depth = 0;  // the deepest stack the walk had (named replays reserve its names)
  std::uint32_t items = 0;  // what the walk yielded (unfiltered): a replay's length hint
  // A change stamp at which every dict above had its recorded version (dict
  // watchers only): while no followed dict changes, one load proves them all.
  ChangeStamp proven_at = kNeverProven;

  // What a replay runs, compiled when the record is complete (replay_program.h),
  // and the most references it pins (reserved at its start).
  RawVector<ReplayOp> program;
  RawVector<ModuleRecord*> leave_runs;  // the modules of its LeaveRun ops, in order
  std::size_t program_pins = 0;
  std::size_t program_held = 0;  // and the most dicts it holds at once

  // The program's checks all at once, and what it yields, for an eager replay
  // that runs it whole with no code between its steps (Walker::replay_straight):
  // where every check passes now, the program would yield `items`, in order.
  struct Straight {
    // What the program reads of a module: bits of kModule, kMembers, kChildren.
    static constexpr std::uint8_t kModule = 1, kMembers = 2, kChildren = 4;
    struct Read {
      const ModuleRecord* module;
      std::uint8_t what;
    };
    bool usable = false;                  // no Live op, and every module read before its dicts
    RawVector<Read> reads;                // in the order modules were entered: parents first
    RawVector<std::uint32_t> duplicates;  // its Duplicate ops' children entries
    RawVector<PyObject*> items;           // borrowed, as every pointer here
  } straight;

  // Names built by named replays under `names_prefix`, one per module and
  // per member entry (null until built): str objects of pyparams' own, held
  // strongly; a name depends only on the prefix and on the recorded keys.
  PyObject* names_prefix = nullptr;
  RawVector<PyObject*> module_names;
  RawVector<PyObject*> member_names;
  // Renewed whenever the names are dropped: a walk still open under another
  // prefix sees it changed and builds its names itself from then on.
  std::uint64_t names_generation = 0;
  // Per ModuleRecord, a copy of pyparams' own of the key the walk entered it
  // under (the root's null): what an unnamed replay going live labels a frame
  // with when the model has let the key itself go.
  RawVector<PyObject*> key_copies;

  WalkRecord() = default;
  WalkRecord(const WalkRecord&) = delete;
  WalkRecord& operator=(const WalkRecord&) = delete;
  ~WalkRecord() {
    forget_names();
    for (PyObject* copy : key_copies) {
      Py_XDECREF(copy);  // exact str of ours: runs no code
    }
  }
  // Makes key_copies (a complete record, its dicts just proven unchanged).
  // False when out of memory (no error set).
  bool copy_keys() noexcept;

  // The names cache for `prefix`: cleared and resized when the prefix differs.
  // False when it could not be allocated (names are then built as the live walk does).
  bool use_names(PyObject* prefix) noexcept;
  void forget_names() noexcept;
  std::size_t bytes() const noexcept;
};

using RecordPtr = GilShared<WalkRecord>;

// Which walk a record describes: the options that shape what is read.
int record_slot(int kind, bool recurse, bool remove_duplicate) noexcept;

bool cache_enabled() noexcept;
// Why the cache is off, in words; "" while it is on.
const char* cache_off_reason() noexcept;

// The record of `root`'s walk in `slot`, or null.
RecordPtr find_record(PyObject* root, int slot);
// The same, borrowed: valid until code runs that may drop it.
const WalkRecord* peek_record(PyObject* root, int slot);
// Keeps `record` for `root` until the root dies or the cache is cleared.
// Gives up quietly (no error set) when `root` cannot be weakly referenced.
void store_record(PyObject* root, int slot, RecordPtr record);
// Forgets `record` (met a change): the next walk records afresh.
void drop_record(PyObject* root, int slot, const WalkRecord* record) noexcept;
// True when a walk of `root` completed before and entered at most
// `max_modules` modules: then this one records. A small table of addresses,
// no references: a reused address costs one early recording, never a wrong walk.
bool walked_before(PyObject* root, std::size_t max_modules) noexcept;
void note_walk_size(PyObject* root, std::size_t modules) noexcept;

// The dispatch epoch: changes when the set of base methods changes, which
// changes what a class's version proves.
std::uint64_t dispatch_epoch() noexcept;
void advance_dispatch_epoch() noexcept;

struct CacheCounters {
  std::uint64_t hits = 0;           // walks that replayed a record
  std::uint64_t misses = 0;         // walks that found none and walked live
  std::uint64_t invalidations = 0;  // replays that met a change and went on live
  std::uint64_t revalidations = 0;  // __dict__ writes re-checked entry by entry and kept
  // Instance __dict__s recording built (a fresh module keeps its attributes
  // inline, with no version to check), and their bytes: the modules own them.
  std::uint64_t dicts_built = 0;
  std::uint64_t dict_bytes = 0;
};
CacheCounters& cache_counters() noexcept;

// sys.getsizeof(object) (the function as it was at import), 0 when unknown.
std::size_t object_bytes(PyObject* object) noexcept;

// Records held and their bytes.
std::size_t cache_records() noexcept;
std::size_t cache_bytes() noexcept;
void cache_clear() noexcept;

// Reads PYPARAMS_CACHE. False with an error set.
bool init_walk_cache();

}  // namespace pyparams
