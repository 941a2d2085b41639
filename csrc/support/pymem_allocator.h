// A standard-library allocator backed by PyMem_RawMalloc.
#pragma once

#include <Python.h>

#include <cstddef>
#include <new>

namespace pyparams {

// Routes container memory through the raw PyMem domain so that tracemalloc
// sees the walker's native allocations: memory comparisons with torch's
// generators stay honest. The raw domain needs no GIL and never runs a GC.
template <typename T>
struct PyMemRawAllocator {
  using value_type = T;

  PyMemRawAllocator() noexcept = default;
  template <typename U>
  PyMemRawAllocator(const PyMemRawAllocator<U>&) noexcept {}

  T* allocate(std::size_t count) {
    if (count > static_cast<std::size_t>(PY_SSIZE_T_MAX) / sizeof(T)) {
      throw std::bad_alloc();
    }
    void* memory = PyMem_RawMalloc(count * sizeof(T));
    if (memory == nullptr) {
      throw std::bad_alloc();
    }
    return static_cast<T*>(memory);
  }

  void deallocate(T* memory, std::size_t) noexcept { PyMem_RawFree(memory); }

  template <typename U>
  bool operator==(const PyMemRawAllocator<U>&) const noexcept {
    return true;
  }
  template <typename U>
  bool operator!=(const PyMemRawAllocator<U>&) const noexcept {
    return false;
  }
};

}  // namespace pyparams
