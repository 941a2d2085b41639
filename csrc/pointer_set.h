// An open-addressing set of object pointers, allocated through PyMem_Raw*.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>

namespace pyparams {

// Identity set of Python objects (what torch's memo `set()` does for modules
// and tensors, whose hash is their id). Linear probing over a power-of-two
// table of bare pointers, kept at most 3/4 full (8 bytes a slot, about a third
// of what a Python set spends per member); erase uses backward-shift deletion,
// so no tombstones ever accumulate.
//
// With `Ownership::Strong` the set holds a reference to every member, as
// torch's memo does: a member freed mid-walk can then never have its address
// reused by a new object that would be mistaken for a duplicate.
class PointerSet {
 public:
  enum class Ownership { Strong, Borrowed };

  explicit PointerSet(Ownership ownership) noexcept : ownership_(ownership) {}
  PointerSet(const PointerSet&) = delete;
  PointerSet& operator=(const PointerSet&) = delete;
  ~PointerSet() { clear(); }

  // 1 if `object` was added, 0 if it was already present, -1 with
  // MemoryError set when the table could not grow.
  int insert(PyObject* object) {
    if ((size_ + 1) * 4 > capacity_ * 3 && !grow()) {
      return -1;
    }
    std::size_t index = slot_of(object);
    while (slots_[index] != nullptr) {
      if (slots_[index] == object) {
        return 0;
      }
      index = (index + 1) & mask();
    }
    slots_[index] = object;
    ++size_;
    if (ownership_ == Ownership::Strong) {
      Py_INCREF(object);
    }
    return 1;
  }

  bool contains(PyObject* object) const noexcept {
    if (capacity_ == 0) {
      return false;
    }
    for (std::size_t index = slot_of(object); slots_[index] != nullptr;
         index = (index + 1) & mask()) {
      if (slots_[index] == object) {
        return true;
      }
    }
    return false;
  }

  // Removes `object` if present (used for borrowed sets only).
  void erase(PyObject* object) noexcept {
    if (capacity_ == 0) {
      return;
    }
    std::size_t hole = slot_of(object);
    while (slots_[hole] != object) {
      if (slots_[hole] == nullptr) {
        return;
      }
      hole = (hole + 1) & mask();
    }
    slots_[hole] = nullptr;
    --size_;
    // Shift back every later entry of the probe run that may sit in the hole.
    for (std::size_t next = (hole + 1) & mask(); slots_[next] != nullptr;
         next = (next + 1) & mask()) {
      std::size_t home = slot_of(slots_[next]);
      bool stays = (next > hole) ? (home > hole && home <= next) : (home > hole || home <= next);
      if (!stays) {
        slots_[hole] = slots_[next];
        slots_[next] = nullptr;
        hole = next;
      }
    }
    if (ownership_ == Ownership::Strong) {
      Py_DECREF(object);
    }
  }

  // Drops every member (and its reference, when strong) and frees the table.
  void clear() noexcept {
    PyObject** slots = slots_;
    std::size_t capacity = capacity_;
    slots_ = nullptr;
    capacity_ = 0;
    size_ = 0;
    if (slots == nullptr) {
      return;
    }
    if (ownership_ == Ownership::Strong) {
      for (std::size_t i = 0; i < capacity; ++i) {
        Py_XDECREF(slots[i]);
      }
    }
    PyMem_RawFree(slots);
  }

  int traverse(visitproc visit, void* arg) const {
    if (ownership_ != Ownership::Strong) {
      return 0;
    }
    for (std::size_t i = 0; i < capacity_; ++i) {
      Py_VISIT(slots_[i]);
    }
    return 0;
  }

 private:
  static constexpr std::size_t kInitialCapacity = 16;

  std::size_t mask() const noexcept { return capacity_ - 1; }

  // Fibonacci hashing of the address: objects are 16-byte aligned, so the low
  // bits carry no information and a plain modulo would cluster.
  std::size_t slot_of(PyObject* object) const noexcept {
    auto bits = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(object));
    return static_cast<std::size_t>((bits * 0x9E3779B97F4A7C15ULL) >> shift_);
  }

  bool grow() {
    std::size_t new_capacity = capacity_ == 0 ? kInitialCapacity : capacity_ * 2;
    if (new_capacity > PY_SSIZE_T_MAX / sizeof(PyObject*)) {
      PyErr_NoMemory();
      return false;
    }
    auto** new_slots = static_cast<PyObject**>(PyMem_RawCalloc(new_capacity, sizeof(PyObject*)));
    if (new_slots == nullptr) {
      PyErr_NoMemory();
      return false;
    }
    PyObject** old_slots = slots_;
    std::size_t old_capacity = capacity_;
    slots_ = new_slots;
    capacity_ = new_capacity;
    shift_ = 64 - log2(new_capacity);
    for (std::size_t i = 0; i < old_capacity; ++i) {
      if (old_slots[i] != nullptr) {
        std::size_t index = slot_of(old_slots[i]);
        while (slots_[index] != nullptr) {
          index = (index + 1) & mask();
        }
        slots_[index] = old_slots[i];
      }
    }
    PyMem_RawFree(old_slots);
    return true;
  }

  static unsigned log2(std::size_t power_of_two) noexcept {
    unsigned bits = 0;
    while ((std::size_t{1} << bits) < power_of_two) {
      ++bits;
    }
    return bits;
  }

  PyObject** slots_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
  unsigned shift_ = 64;
  Ownership ownership_;
};

}  // namespace pyparams
