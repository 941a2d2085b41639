#include "cache/dict_versions.h"

#include <cstddef>
#include <new>

#include "support/address_table.h"

namespace pyparams {

#if PYPARAMS_WATCHED_DICTS
namespace detail {
ChangeStamp g_dict_changes = 0;
}  // namespace detail

namespace {

// The followed dicts and their versions. Allocated once and never destroyed:
// dicts die, and call the watcher, during interpreter shutdown.
AddressTable<Version>* g_followed = nullptr;
int g_watcher = -1;
Version g_last_version = 0;
const char* g_unavailable = "the dict watcher was never registered";

// Called by CPython before every change of a watched dict (and before it is
// freed): the change stamp moves, and the dict gets a new version, or its
// entry goes with it. Runs no Python code and allocates nothing.
int on_dict_event(PyDict_WatchEvent event, PyObject* dict, PyObject*, PyObject*) noexcept {
  ++detail::g_dict_changes;
  if (event == PyDict_EVENT_DEALLOCATED) {
    g_followed->erase(dict);  // a new dict at this address starts unfollowed: no version
  } else if (Version* version = g_followed->find(dict)) {
    *version = ++g_last_version;
  }
  return 0;
}

}  // namespace

namespace detail {
Version watched_version(PyObject* dict) noexcept {
  Version* version = g_followed != nullptr ? g_followed->find(dict) : nullptr;
  return version != nullptr ? *version : 0;
}
}  // namespace detail

Version follow_dict(PyObject* dict) noexcept {
  if (g_watcher < 0) {
    return 0;
  }
  if (Version* version = g_followed->find(dict)) {
    return *version;
  }
  // Watched first, then entered: an entry always has a watch behind it.
  if (PyDict_Watch(g_watcher, dict) < 0) {
    PyErr_Clear();
    return 0;
  }
  bool added = false;
  Version* version = g_followed->insert(dict, added);
  if (version == nullptr) {
    return 0;  // still watched, which only costs a callback
  }
  *version = ++g_last_version;
  return *version;
}

bool dict_versions_available() noexcept {
  return g_watcher >= 0;
}

const char* dict_versions_unavailable_reason() noexcept {
  return g_watcher >= 0 ? "" : g_unavailable;
}

std::size_t followed_dicts_bytes() noexcept {
  return g_followed != nullptr ? g_followed->bytes() : 0;
}

void forget_followed_dicts() noexcept {
  if (g_followed == nullptr) {
    return;
  }
  ++detail::g_dict_changes;  // nothing proven before holds: no dict is followed now
  g_followed->drain([](const void* dict, Version) {
    // Alive: a dict's entry goes when it is freed.
    if (PyDict_Unwatch(g_watcher, static_cast<PyObject*>(const_cast<void*>(dict))) < 0) {
      PyErr_Clear();
    }
  });
}

void init_dict_versions() noexcept {
  // 3.13.0's watchers miss writes through inline values (gh-125608): the
  // interpreter running counts, not the headers built against.
  if (Py_Version >= 0x030D0000 && Py_Version < 0x030D01F0) {
    g_unavailable =
        "CPython 3.13.0's dict watchers miss writes through inline attributes (gh-125608, "
        "fixed in 3.13.1)";
    return;
  }
  if (g_watcher < 0) {
    if (g_followed == nullptr) {
      g_followed = new (std::nothrow) AddressTable<Version>();
      if (g_followed == nullptr) {
        g_unavailable = "no memory for the table of watched dicts at import";
        return;  // no table, no watcher: walks stay live
      }
    }
    g_watcher = PyDict_AddWatcher(on_dict_event);
    if (g_watcher < 0) {
      PyErr_Clear();  // all of CPython's watcher slots taken: walks stay live
      g_unavailable = "every one of CPython's dict-watcher slots was taken at import";
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

const char* dict_versions_unavailable_reason() noexcept {
#if PYPARAMS_VERSION_TAGS
  return "";
#elif defined(Py_GIL_DISABLED)
  return "not built for free-threaded CPython: every walk is live";
#else
#define PYPARAMS_SPELLED(x) #x
#define PYPARAMS_NUMBER(x) PYPARAMS_SPELLED(x)
  return "not built for CPython " PYPARAMS_NUMBER(PY_MAJOR_VERSION) "." PYPARAMS_NUMBER(
      PY_MINOR_VERSION) ", on which it has not been tested: every walk is live";
#undef PYPARAMS_NUMBER
#undef PYPARAMS_SPELLED
#endif
}

std::size_t followed_dicts_bytes() noexcept {
  return 0;
}

void forget_followed_dicts() noexcept {}

void init_dict_versions() noexcept {}

#endif

}  // namespace pyparams
