// The one open-addressing table of the project: keys are addresses (objects,
// dicts: never odd, the table's growth uses the low bit), compared by
// identity, never dereferenced; storage through PyMem_Raw*
// (tracemalloc sees it). Linear probing over a power-of-two table, Fibonacci
// hashing of the address, kept at most 3/4 full; erase shifts the later
// entries of a probe run back (no tombstones). Runs no Python code: usable
// from a dict watcher's callback (find and erase never allocate).
#pragma once

#include <Python.h>

#include <cassert>
#include <cstddef>
#include <cstdint>

namespace pyparams {

struct NoValue {};

// `GrowInPlaceBytes`: from this size on, the table grows in place (grow()).
template <typename Value, std::size_t GrowInPlaceBytes = std::size_t{4} << 20>
class AddressTable {
 public:
  struct Slot {
    const void* key;
    [[no_unique_address]] Value value;
  };

  AddressTable() = default;
  AddressTable(const AddressTable&) = delete;
  AddressTable& operator=(const AddressTable&) = delete;
  ~AddressTable() {
    if (slots_ != nullptr) {  // most walks never make one: no call into the allocator
      PyMem_RawFree(slots_);
    }
  }

  std::size_t size() const noexcept { return size_; }
  std::size_t bytes() const noexcept { return capacity_ * sizeof(Slot); }

  Value* find(const void* key) noexcept {
    if (size_ == 0) {
      return nullptr;
    }
    for (std::size_t index = home(key); slots_[index].key != nullptr; index = next(index)) {
      if (slots_[index].key == key) {
        return &slots_[index].value;
      }
    }
    return nullptr;
  }
  bool contains(const void* key) const noexcept {
    return const_cast<AddressTable*>(this)->find(key) != nullptr;
  }

  // The value of `key`, added (value-initialized, `added` set) when absent;
  // nullptr when the table could not grow (no error set).
  Value* insert(const void* key, bool& added) noexcept {
    assert(!is_marked(key));
    added = false;
    if ((std::size_t{size_} + 1) * 4 > std::size_t{capacity_} * 3 && !grow()) {
      return nullptr;
    }
    std::size_t index = home(key);
    for (; slots_[index].key != nullptr; index = next(index)) {
      if (slots_[index].key == key) {
        return &slots_[index].value;
      }
    }
    slots_[index] = Slot{key, Value{}};
    ++size_;
    added = true;
    return &slots_[index].value;
  }

  // True when `key` was there (and is gone now).
  bool erase(const void* key) noexcept {
    if (size_ == 0) {
      return false;
    }
    std::size_t hole = home(key);
    while (slots_[hole].key != key) {
      if (slots_[hole].key == nullptr) {
        return false;
      }
      hole = next(hole);
    }
    // Move back every later entry of the run whose home is not in (hole, at].
    for (std::size_t at = next(hole); slots_[at].key != nullptr; at = next(at)) {
      std::size_t wanted = home(slots_[at].key);
      if (((at - wanted) & mask()) >= ((at - hole) & mask())) {
        slots_[hole] = slots_[at];
        hole = at;
      }
    }
    slots_[hole] = Slot{nullptr, Value{}};
    --size_;
    return true;
  }

  // Hands the storage to the caller's loop over `visit(key, value)`, then frees it: the
  // table is empty before any visit runs (a visit may run code that uses the table).
  template <typename Visit>
  void drain(Visit&& visit) noexcept {
    if (slots_ == nullptr) {
      return;  // never grown (a replayed walk's live-walk sets): nothing to visit or free
    }
    Slot* slots = slots_;
    std::size_t capacity = capacity_;
    slots_ = nullptr;
    capacity_ = 0;
    size_ = 0;
    shift_ = 64;
    for (std::size_t index = 0; index < capacity; ++index) {
      if (slots[index].key != nullptr) {
        visit(slots[index].key, slots[index].value);
      }
    }
    PyMem_RawFree(slots);
  }

  template <typename Visit>
  int for_each(Visit&& visit) const {
    for (std::size_t index = 0; index < capacity_; ++index) {
      if (slots_[index].key != nullptr) {
        if (int result = visit(slots_[index].key, slots_[index].value)) {
          return result;
        }
      }
    }
    return 0;
  }

 private:
  static constexpr std::size_t kInitialCapacity = 16;
  // Counts fit 32 bits (2^31 slots would be 16 GiB of keys alone): the table
  // is 24 bytes, and a walker that embeds three stays one small object.
  static constexpr std::size_t kMaxCapacity = std::size_t{1} << 31;

  std::size_t mask() const noexcept { return std::size_t{capacity_} - 1; }
  std::size_t next(std::size_t index) const noexcept { return (index + 1) & mask(); }

  // Objects are 16-byte aligned: the low bits carry nothing, a plain modulo would cluster.
  std::size_t home(const void* key) const noexcept {
    auto bits = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(key));
    return static_cast<std::size_t>((bits * 0x9E3779B97F4A7C15ULL) >> shift_);
  }

  // Doubles the table. A small one is rehashed into a new block, the fastest
  // way while both fit the caches. From GrowInPlaceBytes on, the block is
  // reallocated instead and the entries move within it: the allocator
  // extends or remaps a block that large rather than copying it, so the old
  // and the doubled table are never both held (a walk over a million
  // modules peaks at 16 MiB of table, not 24), and no fresh pages are
  // faulted in (faster there, too).
  bool grow() noexcept {
    std::size_t capacity = capacity_ == 0 ? kInitialCapacity : std::size_t{capacity_} * 2;
    if (capacity > kMaxCapacity || capacity > PY_SSIZE_T_MAX / sizeof(Slot)) {
      return false;
    }
    return bytes() >= GrowInPlaceBytes ? grow_in_place(capacity) : grow_into_new_block(capacity);
  }

  bool grow_into_new_block(std::size_t capacity) noexcept {
    auto* slots = static_cast<Slot*>(PyMem_RawCalloc(capacity, sizeof(Slot)));
    if (slots == nullptr) {
      return false;
    }
    Slot* old = slots_;
    std::size_t old_capacity = capacity_;
    use_slots(slots, capacity);
    for (std::size_t index = 0; index < old_capacity; ++index) {
      if (old[index].key != nullptr) {
        std::size_t at = home(old[index].key);
        while (slots_[at].key != nullptr) {
          at = next(at);
        }
        slots_[at] = old[index];
      }
    }
    PyMem_RawFree(old);
    return true;
  }

  // Each entry still to move carries a mark in its key's low bit (keys are
  // object addresses, so the bit is free). An entry being placed probes past
  // placed entries only and takes the first slot that is empty or marked (and
  // then carries on placing the marked one): placed entries never move again,
  // so no probe run is ever broken.
  bool grow_in_place(std::size_t capacity) noexcept {
    std::size_t old_capacity = capacity_;
    auto* slots = static_cast<Slot*>(PyMem_RawRealloc(slots_, capacity * sizeof(Slot)));
    if (slots == nullptr) {
      return false;  // (the table is as it was)
    }
    for (std::size_t index = old_capacity; index < capacity; ++index) {
      slots[index] = Slot{nullptr, Value{}};
    }
    use_slots(slots, capacity);
    for (std::size_t index = 0; index < old_capacity; ++index) {
      if (slots_[index].key != nullptr) {
        slots_[index].key = marked(slots_[index].key);
      }
    }
    // From the top down: an entry's new place is about twice its old one, so it
    // mostly lands where the entries are placed already, and seldom displaces one.
    for (std::size_t index = old_capacity; index-- > 0;) {
      if (!is_marked(slots_[index].key)) {
        continue;  // empty, or placed already
      }
      Slot moving{unmarked(slots_[index].key), slots_[index].value};
      slots_[index] = Slot{nullptr, Value{}};
      for (;;) {
        std::size_t at = home(moving.key);
        while (slots_[at].key != nullptr && !is_marked(slots_[at].key)) {
          at = next(at);
        }
        Slot displaced = slots_[at];
        slots_[at] = moving;
        if (displaced.key == nullptr) {
          break;
        }
        moving = Slot{unmarked(displaced.key), displaced.value};
      }
    }
    return true;
  }

  void use_slots(Slot* slots, std::size_t capacity) noexcept {
    slots_ = slots;
    capacity_ = static_cast<std::uint32_t>(capacity);
    shift_ = static_cast<std::uint8_t>(64 - log2(capacity));
  }

  static const void* marked(const void* key) noexcept {
    return reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(key) | 1);
  }
  static const void* unmarked(const void* key) noexcept {
    return reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(key) &
                                         ~std::uintptr_t{1});
  }
  static bool is_marked(const void* key) noexcept {
    return (reinterpret_cast<std::uintptr_t>(key) & 1) != 0;
  }

  static unsigned log2(std::size_t power_of_two) noexcept {
    unsigned bits = 0;
    while ((std::size_t{1} << bits) < power_of_two) {
      ++bits;
    }
    return bits;
  }

  Slot* slots_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint32_t size_ = 0;
  std::uint8_t shift_ = 64;
};

}  // namespace pyparams
