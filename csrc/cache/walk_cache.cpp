#include "cache/walk_cache.h"

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include "support/address_table.h"
#include "support/owned_ref.h"

namespace pyparams {
namespace {

// kind (3) x recurse (2) x remove_duplicate (2).
constexpr int kSlots = 12;

struct RootRecords {
  OwnedRef weakref;  // to the root, whose death drops this entry
  std::array<RecordPtr, kSlots> records;
};

bool g_enabled = false;
bool g_turned_off = false;  // PYPARAMS_CACHE=0 at import
// sys.getsizeof, taken at import: CPython 3.13 no longer exports the C function behind it.
PyObject* g_getsizeof = nullptr;
std::uint64_t g_epoch = 1;
CacheCounters g_counters;
// The roots with records, by address: one probe finds a root's records on
// every walk (and on every length hint). Entries are owned (new/delete).
AddressTable<RootRecords*>* g_roots = nullptr;

RootRecords* find_root(PyObject* root) noexcept {
  RootRecords** found = g_roots->find(root);
  return found != nullptr ? *found : nullptr;
}
// Roots walked live once, with the number of modules their last complete walk
// entered (SIZE_MAX: none completed yet). A plain weakref (no callback, so
// dropping it runs no code) proves the root at an address is the one walked: a
// model freed and another built at its address is walked for the first time
// again, not recorded. A root that takes no weakref has its address only.
struct WalkedRoot {
  PyObject* root = nullptr;
  PyObject* weakref = nullptr;  // owned
  std::size_t modules = SIZE_MAX;
};
// 65,536 slots (1.5 MiB, zeroed pages the process only maps as they are used)
// in sets of 8: a model's tens of thousands of leaves, each walked by ZeRO-3
// every step, get their records instead of evicting one another (an MoE of 32
// layers x 64 experts has 6,176 leaves; DeepSeek-V3's experts, ~47,000). A
// root may sit in either of two sets and goes into the emptier: with one set
// per root, 10,000 roots at random addresses overfill some set in 1 process of
// 22 (a set's count is Poisson, mean 1.2); with two, 47,000 fit.
constexpr std::size_t kWalkedWays = 8;
constexpr unsigned kWalkedSetBits = 13;
std::array<WalkedRoot, (std::size_t{1} << kWalkedSetBits) * kWalkedWays> g_walked{};
// A bit a set, set once a root goes into it: cache_clear() empties those sets
// only, instead of sweeping 1.5 MiB through the CPU's caches (and mapping it)
// before each cold walk a benchmark times.
std::array<std::uint64_t, (std::size_t{1} << kWalkedSetBits) / 64> g_walked_sets_used{};

// The weakref callback: `self` holds the root's address.
PyObject* forget_root(PyObject* self, PyObject* weakref) {
  void* root = PyLong_AsVoidPtr(self);
  if (root == nullptr && PyErr_Occurred()) {
    return nullptr;
  }
  RootRecords* found = find_root(static_cast<PyObject*>(root));
  if (found != nullptr && found->weakref.get() == weakref) {
    g_roots->erase(root);
    delete found;  // after the erase: dropping its references looks at nothing here
  }
  Py_RETURN_NONE;
}

PyMethodDef g_forget_root_def = {"forget_root", forget_root, METH_O,
                                 "Drops the walk records of a root that died."};

}  // namespace

bool WalkRecord::use_names(PyObject* prefix) noexcept {
  // (The empty prefix is CPython's one empty str, and so is the copy of it.)
  if (names_prefix != nullptr &&
      (names_prefix == prefix || PyUnicode_Compare(names_prefix, prefix) == 0)) {
    return true;
  }
  PyErr_Clear();
  forget_names();
  try {
    module_names.assign(modules.size(), nullptr);
    member_names.assign(members.size(), nullptr);
  } catch (const std::bad_alloc&) {
    forget_names();
    return false;
  }
  // A copy of pyparams' own: the cache keeps no object of the caller's alive.
  names_prefix = PyUnicode_FromKindAndData(PyUnicode_KIND(prefix), PyUnicode_DATA(prefix),
                                           PyUnicode_GET_LENGTH(prefix));
  if (names_prefix == nullptr) {
    PyErr_Clear();
    forget_names();
    return false;
  }
  return true;
}

void WalkRecord::forget_names() noexcept {
  ++names_generation;
  RawVector<PyObject*> dropped_modules;
  RawVector<PyObject*> dropped_members;
  dropped_modules.swap(module_names);
  dropped_members.swap(member_names);
  Py_CLEAR(names_prefix);
  for (PyObject* name : dropped_modules) {
    Py_XDECREF(name);
  }
  for (PyObject* name : dropped_members) {
    Py_XDECREF(name);
  }
}

bool WalkRecord::copy_keys() noexcept {
  try {
    key_copies.assign(modules.size(), nullptr);
  } catch (const std::bad_alloc&) {
    return false;
  }
  for (const EntryRecord& entry : children) {
    if (entry.entered == EntryRecord::kNotEntered) {
      continue;
    }
    PyObject* key = entry.key;  // an exact str (recording takes no other)
    PyObject* copy = PyUnicode_FromKindAndData(PyUnicode_KIND(key), PyUnicode_DATA(key),
                                               PyUnicode_GET_LENGTH(key));
    if (copy == nullptr) {
      PyErr_Clear();
      return false;
    }
    key_copies[static_cast<std::size_t>(entry.entered)] = copy;
  }
  return true;
}

std::size_t WalkRecord::bytes() const noexcept {
  std::size_t names = 0;
  for (const RawVector<PyObject*>* built : {&module_names, &member_names, &key_copies}) {
    for (PyObject* name : *built) {
      names += name != nullptr
          ? static_cast<std::size_t>(sizeof(PyASCIIObject) + PyUnicode_GET_LENGTH(name) + 1)
          : 0;
    }
  }
  return sizeof(WalkRecord) + modules.capacity() * sizeof(ModuleRecord) +
      (members.capacity() + children.capacity()) * sizeof(EntryRecord) +
      program.capacity() * sizeof(ReplayOp) + leave_runs.capacity() * sizeof(ModuleRecord*) +
      straight.reads.capacity() * sizeof(WalkRecord::Straight::Read) +
      straight.items.capacity() * sizeof(PyObject*) +
      straight.duplicates.capacity() * sizeof(std::uint32_t) +
      (module_names.capacity() + member_names.capacity() + key_copies.capacity()) *
      sizeof(PyObject*) +
      names;
}

int record_slot(int kind, bool recurse, bool remove_duplicate) noexcept {
  return kind * 4 + (recurse ? 2 : 0) + (remove_duplicate ? 1 : 0);
}

bool cache_enabled() noexcept {
  return g_enabled;
}

const char* cache_off_reason() noexcept {
  if (g_enabled) {
    return "";
  }
  return g_turned_off ? "PYPARAMS_CACHE=0 in the environment at import"
                      : dict_versions_unavailable_reason();
}

RecordPtr find_record(PyObject* root, int slot) {
  RootRecords* found = find_root(root);
  if (found == nullptr) {
    return nullptr;
  }
  RecordPtr& record = found->records[static_cast<std::size_t>(slot)];
  if (record && record->epoch != g_epoch) {
    record.reset();
  }
  return record;
}

const WalkRecord* peek_record(PyObject* root, int slot) {
  const RootRecords* found = find_root(root);
  if (found == nullptr) {
    return nullptr;
  }
  const RecordPtr& record = found->records[static_cast<std::size_t>(slot)];
  return record && record->epoch == g_epoch ? record.get() : nullptr;
}

void store_record(PyObject* root, int slot, RecordPtr record) {
  RootRecords* found = find_root(root);
  if (found == nullptr) {
    if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(root))) {
      return;
    }
    OwnedRef address = OwnedRef::steal(PyLong_FromVoidPtr(root));
    OwnedRef callback =
        address ? OwnedRef::steal(PyCFunction_New(&g_forget_root_def, address.get())) : OwnedRef();
    OwnedRef weakref =
        callback ? OwnedRef::steal(PyWeakref_NewRef(root, callback.get())) : OwnedRef();
    if (!weakref) {
      PyErr_Clear();  // no record, no harm: the walk stays live
      return;
    }
    auto* added = new (std::nothrow) RootRecords{};
    bool inserted = false;
    RootRecords** slot_for_root = added != nullptr ? g_roots->insert(root, inserted) : nullptr;
    if (slot_for_root == nullptr) {
      delete added;  // out of memory: no record, no harm
      return;
    }
    if (inserted) {
      *slot_for_root = added;
      found = added;
      found->weakref = std::move(weakref);
    } else {
      // Making the weakref may run the cyclic GC, whose finalizers may walk this
      // root and store its records: keep theirs (and their weakref), not a second entry.
      delete added;
      found = *slot_for_root;
    }
  }
  found->records[static_cast<std::size_t>(slot)] = std::move(record);
}

void drop_record(PyObject* root, int slot, const WalkRecord* record) noexcept {
  if (RootRecords* found = find_root(root)) {
    RecordPtr& held = found->records[static_cast<std::size_t>(slot)];
    if (held.get() == record) {
      held.reset();
    }
  }
}

// A full 64-bit mix of the address (MurmurHash3's finalizer): a plain
// multiplicative hash clusters some allocator strides into one set (objects of
// one size share their low bits; under ASan, 17 of 10,000 leaves fell into one
// set of the multiplicative hash used before). Its top and low bits pick the two sets.
std::uint64_t mix_address(PyObject* root) noexcept {
  auto bits = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(root));
  bits ^= bits >> 33;
  bits *= 0xFF51AFD7ED558CCDull;
  bits ^= bits >> 33;
  bits *= 0xC4CEB9FE1A85EC53ull;
  bits ^= bits >> 33;
  return bits;
}

struct WalkedSets {
  WalkedRoot* first;
  WalkedRoot* second;
};

WalkedSets walked_sets(PyObject* root) noexcept {
  constexpr std::uint64_t kSetMask = (std::uint64_t{1} << kWalkedSetBits) - 1;
  std::uint64_t hash = mix_address(root);
  return {&g_walked[static_cast<std::size_t>(hash >> (64 - kWalkedSetBits)) * kWalkedWays],
          &g_walked[static_cast<std::size_t>(hash & kSetMask) * kWalkedWays]};
}

// The entry for `root`'s address, or nullptr. There is at most one: a root
// takes the entry a dead root left at its address.
WalkedRoot* find_walked(WalkedSets sets, PyObject* root) noexcept {
  for (WalkedRoot* set : {sets.first, sets.second}) {
    for (std::size_t way = 0; way < kWalkedWays; ++way) {
      if (set[way].root == root) {
        return &set[way];
      }
    }
  }
  return nullptr;
}

// Whether the entry's root is still the object at its address (its weakref not
// dead; an entry without one has its address only).
bool still_there(const WalkedRoot& entry) noexcept {
  return entry.weakref == nullptr ||
      reinterpret_cast<PyWeakReference*>(entry.weakref)->wr_object == entry.root;
}

// A set fills from its last way down (the newest entry is always last).
std::size_t free_ways(const WalkedRoot* set) noexcept {
  std::size_t free = 0;
  while (free < kWalkedWays && set[free].root == nullptr) {
    ++free;
  }
  return free;
}

PyObject* plain_weakref(PyObject* root) noexcept {
  if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(root))) {
    return nullptr;
  }
  PyObject* weakref = PyWeakref_NewRef(root, nullptr);
  if (weakref == nullptr) {
    PyErr_Clear();  // out of memory: the address alone stands for the root
  }
  return weakref;
}

bool walked_before(PyObject* root, std::size_t max_modules) noexcept {
  WalkedSets sets = walked_sets(root);
  WalkedRoot* slot = find_walked(sets, root);
  if (slot != nullptr && still_there(*slot)) {
    return slot->modules <= max_modules;
  }
  // The weakref first: its allocation may run the cyclic GC, whose finalizers
  // may walk (and so fill this table). The slot is found again after it.
  PyObject* weakref = plain_weakref(root);
  slot = find_walked(sets, root);
  if (slot != nullptr && still_there(*slot)) {
    Py_XDECREF(weakref);  // a finalizer walked it meanwhile
    return slot->modules <= max_modules;
  }
  PyObject* dropped = slot != nullptr ? slot->weakref : nullptr;  // a dead root's
  if (slot == nullptr) {
    // The emptier set takes it; a full one loses its oldest entry: entries move
    // up a way, the new one is last.
    WalkedRoot* set = free_ways(sets.second) > free_ways(sets.first) ? sets.second : sets.first;
    dropped = set[0].weakref;
    for (std::size_t way = 0; way + 1 < kWalkedWays; ++way) {
      set[way] = set[way + 1];
    }
    slot = &set[kWalkedWays - 1];
    std::size_t index = static_cast<std::size_t>(set - g_walked.data()) / kWalkedWays;
    g_walked_sets_used[index / 64] |= std::uint64_t{1} << (index % 64);
  }
  *slot = WalkedRoot{root, weakref, SIZE_MAX};  // size unknown until a walk completes
  Py_XDECREF(dropped);                          // a weakref without a callback: no code runs
  return false;
}

void note_walk_size(PyObject* root, std::size_t modules) noexcept {
  WalkedRoot* slot = find_walked(walked_sets(root), root);
  if (slot != nullptr && still_there(*slot)) {
    slot->modules = modules;
  }
}

std::uint64_t dispatch_epoch() noexcept {
  return g_epoch;
}

void advance_dispatch_epoch() noexcept {
  ++g_epoch;
}

CacheCounters& cache_counters() noexcept {
  return g_counters;
}

std::size_t cache_records() noexcept {
  std::size_t count = 0;
  g_roots->for_each([&count](const void*, RootRecords* entry) {
    for (const RecordPtr& record : entry->records) {
      count += record ? 1 : 0;
    }
    return 0;
  });
  return count;
}

std::size_t cache_bytes() noexcept {
  std::size_t bytes = 0;
  g_roots->for_each([&bytes](const void*, RootRecords* entry) {
    for (const RecordPtr& record : entry->records) {
      bytes += record ? record->bytes() : 0;
    }
    return 0;
  });
  return bytes + followed_dicts_bytes();
}

void cache_clear() noexcept {
  // The table is empty before the first entry is deleted: dropping the
  // weakrefs may run code that looks at it.
  g_roots->drain([](const void*, RootRecords* entry) { delete entry; });
  forget_followed_dicts();  // after the records that relied on them
  for (std::size_t word = 0; word < g_walked_sets_used.size(); ++word) {
    for (std::uint64_t bits = g_walked_sets_used[word]; bits != 0; bits &= bits - 1) {
      std::size_t index = word * 64 + static_cast<std::size_t>(__builtin_ctzll(bits));
      for (std::size_t way = 0; way < kWalkedWays; ++way) {
        WalkedRoot& entry = g_walked[index * kWalkedWays + way];
        PyObject* weakref = entry.weakref;
        entry = WalkedRoot{};
        Py_XDECREF(weakref);  // a weakref without a callback: no code runs
      }
    }
    g_walked_sets_used[word] = 0;
  }
  g_counters = CacheCounters{};
}

std::size_t object_bytes(PyObject* object) noexcept {
  OwnedRef size = OwnedRef::steal(PyObject_CallOneArg(g_getsizeof, object));
  std::size_t bytes = size ? PyLong_AsSize_t(size.get()) : static_cast<std::size_t>(-1);
  if (bytes == static_cast<std::size_t>(-1)) {
    PyErr_Clear();
    return 0;
  }
  return bytes;
}

bool init_walk_cache() {
  if (g_roots != nullptr) {
    return true;
  }
  g_getsizeof = PySys_GetObject("getsizeof");  // borrowed
  if (g_getsizeof == nullptr) {
    PyErr_SetString(PyExc_ImportError, "pyparams: sys.getsizeof is missing");
    return false;
  }
  Py_INCREF(g_getsizeof);
  // Lives as long as the process: weakref callbacks may run during shutdown.
  g_roots = new (std::nothrow) AddressTable<RootRecords*>();
  if (g_roots == nullptr) {
    PyErr_NoMemory();
    return false;
  }
  const char* setting = std::getenv("PYPARAMS_CACHE");
  g_turned_off = setting != nullptr && std::strcmp(setting, "0") == 0;
  if (PYPARAMS_WALK_CACHE && !g_turned_off) {
    init_dict_versions();
    g_enabled = dict_versions_available();
  }
  return true;
}

}  // namespace pyparams
