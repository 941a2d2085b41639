// Shared ownership for objects only ever touched with the GIL held.
#pragma once

#include <cstddef>
#include <new>
#include <utility>

namespace pyparams {

// The count GilShared keeps, in the object itself (derive from it).
class GilCounted {
 protected:
  GilCounted() = default;
  ~GilCounted() = default;

 private:
  template <typename T>
  friend class GilShared;
  std::size_t gil_references_ = 0;
};

// std::shared_ptr without its atomic counts: every copy and drop of a
// std::shared_ptr is a locked instruction (the process is multithreaded),
// two on every warm walk (docs/performance.md has the figures). The
// walker runs only with the GIL held (a free-threaded interpreter without
// it refuses to load pyparams), which orders every count change. Dropping
// the last reference deletes the object: its destructor must run no Python
// code that could reach the counts of this pointer mid-change.
template <typename T>
class GilShared {
 public:
  GilShared() noexcept = default;
  GilShared(std::nullptr_t) noexcept {}
  GilShared(const GilShared& other) noexcept : ptr_(other.ptr_) { take(); }
  GilShared(GilShared&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  GilShared& operator=(const GilShared& other) noexcept {
    GilShared(other).swap(*this);
    return *this;
  }
  GilShared& operator=(GilShared&& other) noexcept {
    GilShared(std::move(other)).swap(*this);
    return *this;
  }
  ~GilShared() { reset(); }

  // A new T, shared by the result alone; null when out of memory.
  static GilShared make() noexcept {
    GilShared made;
    made.ptr_ = new (std::nothrow) T();
    made.take();
    return made;
  }

  void reset() noexcept {
    T* dropped = std::exchange(ptr_, nullptr);
    if (dropped != nullptr && --static_cast<GilCounted*>(dropped)->gil_references_ == 0) {
      delete dropped;
    }
  }
  void swap(GilShared& other) noexcept { std::swap(ptr_, other.ptr_); }

  T* get() const noexcept { return ptr_; }
  T* operator->() const noexcept { return ptr_; }
  T& operator*() const noexcept { return *ptr_; }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

 private:
  void take() noexcept {
    if (ptr_ != nullptr) {
      ++static_cast<GilCounted*>(ptr_)->gil_references_;
    }
  }
  T* ptr_ = nullptr;
};

}  // namespace pyparams
