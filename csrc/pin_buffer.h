// The references a replay holds, in one buffer sized once per walk: its
// program knows the most it can pin, so a pin is one store, no capacity check.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace pyparams {

class PinBuffer {
 public:
  // What a pin holds: tagged in the low bits of the object's address.
  enum Tag : std::uintptr_t { kMember = 0, kModule = 1, kHeld = 2 };

  PinBuffer() = default;
  PinBuffer(const PinBuffer&) = delete;
  PinBuffer& operator=(const PinBuffer&) = delete;
  ~PinBuffer() { PyMem_RawFree(pins_); }

  // Room for `count` pins, the buffer empty (it must be). False when out of memory.
  bool reserve(std::size_t count) noexcept {
    if (count <= capacity_) {
      return true;
    }
    void* grown = PyMem_RawRealloc(pins_, (count == 0 ? 1 : count) * sizeof(std::uintptr_t));
    if (grown == nullptr) {
      return false;
    }
    pins_ = static_cast<std::uintptr_t*>(grown);
    capacity_ = count;
    return true;
  }
  // Takes a reference to `object`; within the reserved room.
  void pin(PyObject* object, Tag tag) noexcept {
    Py_INCREF(object);
    pins_[size_++] = reinterpret_cast<std::uintptr_t>(object) | tag;
  }
  // Drops every reference. A release may run a __del__, which finds the buffer
  // already empty (it may even start a walk of its own on another buffer).
  void release_all() noexcept {
    std::uintptr_t* pins = std::exchange(pins_, nullptr);
    std::size_t size = std::exchange(size_, 0);
    capacity_ = 0;
    for (std::size_t index = 0; index < size; ++index) {
      Py_DECREF(object(pins[index]));
    }
    PyMem_RawFree(pins);
  }

  static PyObject* object(std::uintptr_t pinned) {
    return reinterpret_cast<PyObject*>(pinned & ~std::uintptr_t{3});
  }
  static Tag tag(std::uintptr_t pinned) { return static_cast<Tag>(pinned & 3); }
  const std::uintptr_t* begin() const { return pins_; }
  const std::uintptr_t* end() const { return pins_ + size_; }

 private:
  std::uintptr_t* pins_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace pyparams
