// RAII ownership of one strong reference to a Python object.
#pragma once

#include <Python.h>

#include <utility>

namespace pyparams {

// Owns one reference; releases it on destruction. Move-only, so no path can
// forget a Py_DECREF or drop the same reference twice.
class OwnedRef {
 public:
  OwnedRef() noexcept = default;
  OwnedRef(const OwnedRef&) = delete;
  OwnedRef& operator=(const OwnedRef&) = delete;
  OwnedRef(OwnedRef&& other) noexcept : ptr_(other.ptr_) { other.ptr_ = nullptr; }
  OwnedRef& operator=(OwnedRef&& other) noexcept {
    if (this != &other) {
      reset(other.ptr_);
      other.ptr_ = nullptr;
    }
    return *this;
  }
  ~OwnedRef() { reset(); }

  // Takes over a new reference (the result of a C-API call that returns one).
  static OwnedRef steal(PyObject* ptr) noexcept { return OwnedRef(ptr); }
  // Adds a reference to a borrowed pointer.
  static OwnedRef borrow(PyObject* ptr) noexcept {
    Py_XINCREF(ptr);
    return OwnedRef(ptr);
  }

  PyObject* get() const noexcept { return ptr_; }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

  // Hands the reference to the caller.
  PyObject* release() noexcept { return std::exchange(ptr_, nullptr); }

  // Clears the pointer before dropping the reference: the decref can run
  // arbitrary Python code (a __del__), which must never see a dangling pointer.
  void reset(PyObject* replacement = nullptr) noexcept {
    PyObject* old = std::exchange(ptr_, replacement);
    Py_XDECREF(old);
  }

 private:
  explicit OwnedRef(PyObject* ptr) noexcept : ptr_(ptr) {}
  PyObject* ptr_ = nullptr;
};

}  // namespace pyparams
