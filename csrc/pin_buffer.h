// The references a replay holds, in one buffer sized once per walk: its
// program knows the most it can pin and hold at once, so a pin is one store,
// no capacity check.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace pyparams {

class PinBuffer {
 public:
  // What a pin holds: tagged in the low bits of the object's address.
  enum Tag : std::uintptr_t { kMember = 0, kModule = 1 };

  PinBuffer() = default;
  PinBuffer(const PinBuffer&) = delete;
  PinBuffer& operator=(const PinBuffer&) = delete;
  ~PinBuffer() { PyMem_RawFree(pins_); }

  // Room for `pins` pins and `held` held children dicts, the buffer empty (it must be).
  // False when out of memory.
  bool reserve(std::size_t pins, std::size_t held) noexcept {
    if (pins <= capacity_ && held <= held_capacity_) {
      return true;
    }
    std::size_t bytes = (pins + held) * sizeof(std::uintptr_t);
    void* grown = PyMem_RawRealloc(pins_, bytes == 0 ? 1 : bytes);
    if (grown == nullptr) {
      return false;
    }
    pins_ = static_cast<std::uintptr_t*>(grown);
    capacity_ = pins;
    held_ = reinterpret_cast<PyObject**>(pins_ + pins);
    held_capacity_ = held;
    return true;
  }
  // Takes a reference to `object` until the walk ends; within the reserved room.
  void pin(PyObject* object, Tag tag) noexcept {
    Py_INCREF(object);
    pins_[size_++] = reinterpret_cast<std::uintptr_t>(object) | tag;
  }
  // Takes a reference to a children dict a later step reads again, until its
  // frame is left (leave()); frames are left in the reverse order.
  void hold(PyObject* dict) noexcept {
    Py_INCREF(dict);
    held_[held_size_++] = dict;
  }
  // The frame of the dict held last is left: drops it, as the live walk drops
  // a frame. False, dropping nothing, when ours is its last reference
  // (dropping it frees it, which may run code, and none but the replay's runs
  // within a step): the walk must go live, which drops it in its place.
  bool leave() noexcept {
    PyObject* dict = held_[held_size_ - 1];
    if (!drops_nothing(dict)) {
      return false;
    }
    --held_size_;
    Py_DECREF(dict);
    return true;
  }
  // Takes a reference to the member dict just started, dropping the one held
  // before, as the live walk does (torch's `members` local). False, holding
  // nothing new, when that drop would free: as leave().
  bool hold_members(PyObject* dict) noexcept {
    if (members_ != nullptr && !drops_nothing(members_)) {
      return false;
    }
    Py_INCREF(dict);
    Py_XDECREF(std::exchange(members_, dict));
    return true;
  }
  PyObject* held_members() const { return members_; }
  // Drops every reference. A release may run a __del__, which finds the buffer
  // already empty (it may even start a walk of its own on another buffer).
  void release_all() noexcept {
    std::uintptr_t* pins = std::exchange(pins_, nullptr);
    std::size_t size = std::exchange(size_, 0);
    PyObject** held = std::exchange(held_, nullptr);
    std::size_t held_size = std::exchange(held_size_, 0);
    PyObject* members = std::exchange(members_, nullptr);
    capacity_ = 0;
    held_capacity_ = 0;
    for (std::size_t index = 0; index < size; ++index) {
      Py_DECREF(object(pins[index]));
    }
    for (std::size_t index = 0; index < held_size; ++index) {
      Py_DECREF(held[index]);
    }
    Py_XDECREF(members);
    PyMem_RawFree(pins);
  }

  static PyObject* object(std::uintptr_t pinned) {
    return reinterpret_cast<PyObject*>(pinned & ~std::uintptr_t{3});
  }
  static Tag tag(std::uintptr_t pinned) { return static_cast<Tag>(pinned & 3); }
  const std::uintptr_t* begin() const { return pins_; }
  const std::uintptr_t* end() const { return pins_ + size_; }

  int traverse(visitproc visit, void* arg) const {
    for (std::size_t index = 0; index < size_; ++index) {
      Py_VISIT(object(pins_[index]));
    }
    for (std::size_t index = 0; index < held_size_; ++index) {
      Py_VISIT(held_[index]);
    }
    Py_VISIT(members_);
    return 0;
  }

 private:
  // Whether dropping our reference leaves others: it frees nothing, runs no code.
  static bool drops_nothing(PyObject* object) { return Py_REFCNT(object) > 1; }

  std::uintptr_t* pins_ = nullptr;  // the allocation; held_ follows the pins
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  PyObject** held_ = nullptr;
  std::size_t held_size_ = 0;
  std::size_t held_capacity_ = 0;
  PyObject* members_ = nullptr;  // the member dict held
};

}  // namespace pyparams
