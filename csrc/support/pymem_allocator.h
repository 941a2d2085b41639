// Standard-library allocators backed by the PyMem domains.
#pragma once

#include <Python.h>

#include <cstddef>
#include <new>

namespace pyparams {

// Routes container memory through the raw PyMem domain so that tracemalloc
// sees the walker's native allocations: memory comparisons with torch's
// generators stay honest. The raw domain needs no GIL and never runs a GC.
// The allocation behind both: the raw domain (any thread, no GIL) or the
// object domain (the GIL held; pymalloc serves small blocks without a lock
// or a system call, which a walk's per-call buffers want).
enum class PyMemDomain { Raw, Object };

template <typename T, PyMemDomain kDomain>
struct PyMemAllocatorIn {
  using value_type = T;

  PyMemAllocatorIn() noexcept = default;
  template <typename U>
  PyMemAllocatorIn(const PyMemAllocatorIn<U, kDomain>&) noexcept {}
  template <typename U>
  struct rebind {
    using other = PyMemAllocatorIn<U, kDomain>;
  };

  T* allocate(std::size_t count) {
    if (count > static_cast<std::size_t>(PY_SSIZE_T_MAX) / sizeof(T)) {
      throw std::bad_alloc();
    }
    void* memory = kDomain == PyMemDomain::Raw ? PyMem_RawMalloc(count * sizeof(T))
                                               : PyMem_Malloc(count * sizeof(T));
    if (memory == nullptr) {
      throw std::bad_alloc();
    }
    return static_cast<T*>(memory);
  }

  void deallocate(T* memory, std::size_t) noexcept {
    if (kDomain == PyMemDomain::Raw) {
      PyMem_RawFree(memory);
    } else {
      PyMem_Free(memory);
    }
  }

  template <typename U>
  bool operator==(const PyMemAllocatorIn<U, kDomain>&) const noexcept {
    return true;
  }
  template <typename U>
  bool operator!=(const PyMemAllocatorIn<U, kDomain>&) const noexcept {
    return false;
  }
};

// Long-lived storage (records, tables), freed wherever their owner dies.
template <typename T>
using PyMemRawAllocator = PyMemAllocatorIn<T, PyMemDomain::Raw>;
// A walk's own buffers: made and freed by the walk, always under the GIL.
template <typename T>
using PyMemAllocator = PyMemAllocatorIn<T, PyMemDomain::Object>;

}  // namespace pyparams
