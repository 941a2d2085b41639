#include "dict_versions.h"

#include <cstddef>

namespace pyparams {

#if PYPARAMS_WATCHED_DICTS
namespace detail {
ChangeStamp g_dict_changes = 0;
}  // namespace detail

namespace {

// The followed dicts and their versions: an open-addressing table keyed by
// address, linear probing, deleted by backward shift (no tombstones). Plain
// storage, never destroyed: dicts die, and call the watcher, during shutdown.
struct Followed {
  PyObject* dict;
  Version version;
};

int g_watcher = -1;
Followed* g_slots = nullptr;
std::size_t g_capacity = 0;  // a power of two, or 0
std::size_t g_count = 0;
Version g_last_version = 0;

std::size_t home(PyObject* dict) noexcept {
  constexpr std::uint64_t kGoldenRatio = 0x9E3779B97F4A7C15ull;
  auto address = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(dict));
  return static_cast<std::size_t>((address >> 4) * kGoldenRatio >> 32) & (g_capacity - 1);
}

Followed* find(PyObject* dict) noexcept {
  if (g_count == 0) {
    return nullptr;
  }
  for (std::size_t slot = home(dict);; slot = (slot + 1) & (g_capacity - 1)) {
    if (g_slots[slot].dict == dict) {
      return &g_slots[slot];
    }
    if (g_slots[slot].dict == nullptr) {
      return nullptr;
    }
  }
}

// Empties `hole` and moves up the entries after it that its probe passed over.
void erase(Followed* hole) noexcept {
  std::size_t mask = g_capacity - 1;
  auto empty = static_cast<std::size_t>(hole - g_slots);
  for (std::size_t slot = (empty + 1) & mask; g_slots[slot].dict != nullptr;
       slot = (slot + 1) & mask) {
    std::size_t wanted = home(g_slots[slot].dict);
    // Movable when its home is not in (empty, slot], cyclically.
    if (((slot - wanted) & mask) >= ((slot - empty) & mask)) {
      g_slots[empty] = g_slots[slot];
      empty = slot;
    }
  }
  g_slots[empty] = Followed{nullptr, 0};
  --g_count;
}

// The empty slot where `dict`'s probe ends (the table is never full).
Followed* free_slot(PyObject* dict) noexcept {
  std::size_t slot = home(dict);
  while (g_slots[slot].dict != nullptr) {
    slot = (slot + 1) & (g_capacity - 1);
  }
  return &g_slots[slot];
}

Followed* insert_new(PyObject* dict) noexcept {
  if ((g_count + 1) * 2 > g_capacity) {  // at most half full
    std::size_t capacity = g_capacity == 0 ? 64 : g_capacity * 2;
    auto* slots = static_cast<Followed*>(PyMem_RawCalloc(capacity, sizeof(Followed)));
    if (slots == nullptr) {
      return nullptr;
    }
    Followed* old = g_slots;
    std::size_t old_capacity = g_capacity;
    g_slots = slots;
    g_capacity = capacity;
    for (std::size_t slot = 0; slot < old_capacity; ++slot) {
      if (old[slot].dict != nullptr) {
        *free_slot(old[slot].dict) = old[slot];
      }
    }
    PyMem_RawFree(old);
  }
  Followed* slot = free_slot(dict);
  *slot = Followed{dict, 0};
  ++g_count;
  return slot;
}

// Called by CPython before every change of a watched dict (and before it is
// freed): the change stamp moves, and the dict gets a new version, or its
// entry goes with it. Runs no Python code and allocates nothing.
int on_dict_event(PyDict_WatchEvent event, PyObject* dict, PyObject*, PyObject*) noexcept {
  ++detail::g_dict_changes;
  if (Followed* followed = find(dict)) {
    if (event == PyDict_EVENT_DEALLOCATED) {
      erase(followed);  // a new dict at this address starts unfollowed: no version
    } else {
      followed->version = ++g_last_version;
    }
  }
  return 0;
}

}  // namespace

namespace detail {
Version watched_version(PyObject* dict) noexcept {
  Followed* followed = find(dict);
  return followed != nullptr ? followed->version : 0;
}
}  // namespace detail

Version follow_dict(PyObject* dict) noexcept {
  if (Followed* followed = find(dict)) {
    return followed->version;
  }
  if (g_watcher < 0) {
    return 0;
  }
  // Watched first, then entered: an entry always has a watch behind it.
  if (PyDict_Watch(g_watcher, dict) < 0) {
    PyErr_Clear();
    return 0;
  }
  Followed* followed = insert_new(dict);
  if (followed == nullptr) {
    return 0;  // still watched, which only costs a callback
  }
  followed->version = ++g_last_version;
  return followed->version;
}

bool dict_versions_available() noexcept {
  return g_watcher >= 0;
}

std::size_t followed_dicts_bytes() noexcept {
  return g_capacity * sizeof(Followed);
}

void forget_followed_dicts() noexcept {
  Followed* slots = g_slots;
  std::size_t capacity = g_capacity;
  g_slots = nullptr;
  g_capacity = 0;
  g_count = 0;
  ++detail::g_dict_changes;  // nothing proven before holds: no dict is followed now
  for (std::size_t slot = 0; slot < capacity; ++slot) {
    if (slots[slot].dict != nullptr &&
        PyDict_Unwatch(g_watcher, slots[slot].dict) < 0) {  // alive: its entry is
      PyErr_Clear();
    }
  }
  PyMem_RawFree(slots);
}

void init_dict_versions() noexcept {
  if (g_watcher < 0) {
    g_watcher = PyDict_AddWatcher(on_dict_event);
    if (g_watcher < 0) {
      PyErr_Clear();  // all of CPython's watcher slots taken: walks stay live
    }
  }
}

#else  // ma_version_tag, or no versions at all

Version follow_dict(PyObject* dict) noexcept {
  return current_version(dict);
}

bool dict_versions_available() noexcept {
  return PYPARAMS_VERSION_TAGS != 0;
}

std::size_t followed_dicts_bytes() noexcept {
  return 0;
}

void forget_followed_dicts() noexcept {}

void init_dict_versions() noexcept {}

#endif

}  // namespace pyparams
