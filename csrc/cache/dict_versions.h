// Dict versions: what proves that a dict the walk read is still as it was.
//
// CPython 3.10 and 3.11 keep PEP 509's ma_version_tag, a global counter
// stamped on every write. 3.12 deprecates that field; there a dict watcher
// (PyDict_AddWatcher, CPython's tool for this, as torch's dynamo guards use
// it) notes every change of each dict the cache follows; 3.13 and 3.14
// likewise (3.14 has no ma_version_tag at all). 3.13.0's watchers miss
// attribute writes into a __dict__ that shares its object's inline values
// (CPython gh-125608, fixed in 3.13.1): under 3.13.0 the watcher is never
// registered and every walk is live. On a CPython after 3.14 (not tested
// here) and on free-threaded builds the cache is compiled out.
#pragma once

#include <Python.h>

#include <cstdint>

#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030C0000
#define PYPARAMS_VERSION_TAGS 1
#define PYPARAMS_WATCHED_DICTS 0
#elif PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030F0000 && !defined(Py_GIL_DISABLED)
#define PYPARAMS_VERSION_TAGS 0
#define PYPARAMS_WATCHED_DICTS 1
#else
#define PYPARAMS_VERSION_TAGS 0
#define PYPARAMS_WATCHED_DICTS 0
#endif
#define PYPARAMS_WALK_CACHE (PYPARAMS_VERSION_TAGS || PYPARAMS_WATCHED_DICTS)

namespace pyparams {

// Equal versions of the same dict prove it unchanged in between; 0 is no version.
using Version = std::uint64_t;
// A count of changes to the followed dicts (watched dicts only).
using ChangeStamp = std::uint64_t;
constexpr ChangeStamp kNeverProven = UINT64_MAX;

#if PYPARAMS_WATCHED_DICTS
namespace detail {
extern ChangeStamp g_dict_changes;  // one more on every event of a followed dict
Version watched_version(PyObject* dict) noexcept;
}  // namespace detail

inline ChangeStamp change_stamp() noexcept {
  return detail::g_dict_changes;
}
// True when no followed dict changed since `stamp`: one load stands for every check.
inline bool unchanged_since(ChangeStamp stamp) noexcept {
  return detail::g_dict_changes == stamp;
}
// The version `dict` has now; 0 when it is not followed.
inline Version current_version(PyObject* dict) noexcept {
  return detail::watched_version(dict);
}
#else
inline ChangeStamp change_stamp() noexcept {
  return 0;
}
// Without watchers there is no stamp: each dict is checked by its own version.
inline bool unchanged_since(ChangeStamp) noexcept {
  return false;
}
inline Version current_version(PyObject* dict) noexcept {
#if PYPARAMS_VERSION_TAGS
  return reinterpret_cast<PyDictObject*>(dict)->ma_version_tag;
#else
  (void)dict;
  return 0;  // never called: without versions no record is made
#endif
}
#endif

// Whether `dict` still has `version`. `all_proven`: unchanged_since() a stamp
// at which every dict of the caller's record had its recorded version, asked
// with no code run since (a replay asks once, not at every check: a global's
// load is repeated after every Py_INCREF, which may alias it).
inline bool dict_unchanged(bool all_proven, PyObject* dict, Version version) noexcept {
  return all_proven || current_version(dict) == version;
}

// The version of `dict` now, following it from here on (a watch, where
// versions need one). 0 when it cannot be followed; no error is set.
Version follow_dict(PyObject* dict) noexcept;

// Whether this interpreter gives versions (the watcher could be registered).
bool dict_versions_available() noexcept;
// Why it does not, in words ("" when it does): the interpreter, or no watcher slot.
const char* dict_versions_unavailable_reason() noexcept;
// What following dicts holds, in bytes (the watched-dict table).
std::size_t followed_dicts_bytes() noexcept;
// Stops following every dict (cache_clear).
void forget_followed_dicts() noexcept;

// Registers the watcher where there is one. Never fails the import: without
// it, dict_versions_available() is false and every walk is live.
void init_dict_versions() noexcept;

}  // namespace pyparams
