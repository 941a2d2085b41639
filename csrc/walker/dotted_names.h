// Module and member names as torch builds them: `prefix + "." + key`.
#pragma once

#include <Python.h>

#include <cstddef>

namespace pyparams {

// Names longer than this are built where they are used and never kept: a
// deep chain's names grow with its depth, and keeping every level's would
// cost memory quadratic in it (a frame keeps its key instead).
constexpr Py_ssize_t kMaxKeptNameLength = 200;

// torch's `prefix + ("." if prefix else "") + name` for str parts, built in
// one allocation. A new reference, or nullptr with an error set.
PyObject* join_name(PyObject* prefix, PyObject* key);

// The same for a prefix an override yielded, which may be any object:
// torch's own expression, run as is.
PyObject* join_name_generic(PyObject* prefix, PyObject* key);

// The length of join_name(prefix, key), from the lengths of its parts.
constexpr Py_ssize_t joined_length(Py_ssize_t prefix, Py_ssize_t key) {
  return prefix == 0 ? key : prefix + 1 + key;
}

// join_name applied level by level from `base` through `count` keys
// (key_at(i) for i < count), all exact str, built in one allocation: the
// string torch builds one level at a time. A new reference, or nullptr with
// an error set.
template <typename KeyAt>
PyObject* join_names(PyObject* base, std::size_t count, KeyAt key_at) {
  // The common case, the name from its parent's built last: join_name's fast path.
  if (count <= 1) {
    if (count == 0) {
      Py_INCREF(base);
      return base;
    }
    return join_name(base, key_at(0));
  }
  Py_ssize_t length = PyUnicode_GET_LENGTH(base);
  Py_UCS4 max_char = PyUnicode_MAX_CHAR_VALUE(base);
  for (std::size_t i = 0; i < count; ++i) {
    PyObject* key = key_at(i);
    length = joined_length(length, PyUnicode_GET_LENGTH(key));
    if (PyUnicode_MAX_CHAR_VALUE(key) > max_char) {
      max_char = PyUnicode_MAX_CHAR_VALUE(key);
    }
  }
  PyObject* joined = PyUnicode_New(length, max_char);
  if (joined == nullptr) {
    return nullptr;
  }
  Py_ssize_t at = PyUnicode_GET_LENGTH(base);
  if (PyUnicode_CopyCharacters(joined, 0, base, 0, at) < 0) {
    Py_DECREF(joined);
    return nullptr;
  }
  for (std::size_t i = 0; i < count; ++i) {
    PyObject* key = key_at(i);
    if (at != 0) {
      PyUnicode_WriteChar(joined, at++, '.');
    }
    Py_ssize_t key_length = PyUnicode_GET_LENGTH(key);
    if (PyUnicode_CopyCharacters(joined, at, key, 0, key_length) < 0) {
      Py_DECREF(joined);
      return nullptr;
    }
    at += key_length;
  }
  return joined;
}

}  // namespace pyparams
