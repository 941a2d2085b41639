#include "walker/dotted_names.h"

#include <cstring>

#include "support/owned_ref.h"

namespace pyparams {

PyObject* join_name(PyObject* prefix, PyObject* key) {
  Py_ssize_t prefix_length = PyUnicode_GET_LENGTH(prefix);
  if (prefix_length == 0) {
    // "" + key is key itself for an exact str, a new exact str for a subclass.
    return PyUnicode_FromObject(key);
  }
  Py_ssize_t key_length = PyUnicode_GET_LENGTH(key);
  Py_UCS4 max_char = PyUnicode_MAX_CHAR_VALUE(prefix);
  if (PyUnicode_MAX_CHAR_VALUE(key) > max_char) {
    max_char = PyUnicode_MAX_CHAR_VALUE(key);
  }
  PyObject* joined = PyUnicode_New(prefix_length + 1 + key_length, max_char);
  if (joined == nullptr) {
    return nullptr;
  }
  if (PyUnicode_KIND(joined) == PyUnicode_1BYTE_KIND) [[likely]] {
    // Module names are ASCII: both parts have the joined string's byte width.
    Py_UCS1* out = PyUnicode_1BYTE_DATA(joined);
    std::memcpy(out, PyUnicode_1BYTE_DATA(prefix), static_cast<std::size_t>(prefix_length));
    out[prefix_length] = '.';
    std::memcpy(out + prefix_length + 1, PyUnicode_1BYTE_DATA(key),
                static_cast<std::size_t>(key_length));
    return joined;
  }
  PyUnicode_CopyCharacters(joined, 0, prefix, 0, prefix_length);
  PyUnicode_WriteChar(joined, prefix_length, '.');
  PyUnicode_CopyCharacters(joined, prefix_length + 1, key, 0, key_length);
  return joined;
}

PyObject* join_name_generic(PyObject* prefix, PyObject* key) {
  if (PyUnicode_CheckExact(prefix) && PyUnicode_CheckExact(key)) [[likely]] {
    return join_name(prefix, key);
  }
  int truth = PyObject_IsTrue(prefix);
  if (truth < 0) {
    return nullptr;
  }
  OwnedRef separator = OwnedRef::steal(PyUnicode_FromString(truth ? "." : ""));
  if (!separator) {
    return nullptr;
  }
  OwnedRef left = OwnedRef::steal(PyNumber_Add(prefix, separator.get()));
  return left ? PyNumber_Add(left.get(), key) : nullptr;
}

}  // namespace pyparams
