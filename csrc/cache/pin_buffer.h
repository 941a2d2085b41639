// The references a replay holds, in one buffer sized once per walk: its
// program knows the most it can pin and hold at once, so a pin is one store,
// no capacity check. The buffer is pymalloc's (the GIL is held wherever a walk
// runs): a small walk's costs no system allocation.
//
// Lent (lend()): while a replay runs steps in a row inside one native call
// (Walker::replay_batch), no code but its own runs, so nothing it pins or
// holds can be let go by anyone else: the buffer then notes the objects
// without taking references (the kLent variants), and takes them (keep())
// before anything that may run code, or lets them go unreferenced at the end.
// What it held before lend() stays held: the lent ones lie above a mark.
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
  ~PinBuffer() {
    if (pins_ != nullptr) {  // release_all() freed it already at a walk's end
      PyMem_Free(pins_);
    }
  }

  // Room for `pins` pins and `held` held children dicts, the buffer empty (it must be).
  // False when out of memory.
  bool reserve(std::size_t pins, std::size_t held) noexcept {
    if (pins <= capacity_ && held <= held_capacity_) {
      return true;
    }
    if (pins > UINT32_MAX || held > UINT32_MAX) {
      return false;
    }
    if (pins_ == nullptr && pins + held <= g_spare_words) {
      pins_ = std::exchange(g_spare, nullptr);
      pins_end_ = pins_;
      capacity_ = static_cast<std::uint32_t>(pins);
      held_end_ = held_begin();
      held_capacity_ = static_cast<std::uint32_t>(std::exchange(g_spare_words, 0) - pins);
      return true;
    }
    std::size_t bytes = (pins + held) * sizeof(std::uintptr_t);
    void* grown = PyMem_Realloc(pins_, bytes == 0 ? 1 : bytes);
    if (grown == nullptr) {
      return false;
    }
    pins_ = static_cast<std::uintptr_t*>(grown);
    pins_end_ = pins_;
    capacity_ = static_cast<std::uint32_t>(pins);
    held_end_ = held_begin();
    held_capacity_ = static_cast<std::uint32_t>(held);
    return true;
  }
  // Where the next pin and the next held dict go. The replay keeps it in
  // registers through a step (a store through the buffer's own counters would
  // be reloaded after every Py_INCREF, which may alias them) and commit()s it
  // back before anything reads the buffer or may run code.
  struct Cursor {
    std::uintptr_t* pin;
    PyObject** held;
  };
  Cursor cursor() const noexcept { return {pins_end_, held_end_}; }
  void commit(const Cursor& cursor) noexcept {
    pins_end_ = cursor.pin;
    held_end_ = cursor.held;
  }
  // Takes a reference to `object` until the walk ends; within the reserved room.
  // kLent: only notes it (see lend()).
  template <bool kLent = false>
  static void pin(Cursor& cursor, PyObject* object, Tag tag) noexcept {
    if (!kLent) {
      Py_INCREF(object);
    }
    *cursor.pin++ = reinterpret_cast<std::uintptr_t>(object) | tag;
  }
  // Takes a reference to a children dict a later step reads again, until its
  // frame is left (leave()); frames are left in the reverse order.
  template <bool kLent = false>
  static void hold(Cursor& cursor, PyObject* dict) noexcept {
    if (!kLent) {
      Py_INCREF(dict);
    }
    *cursor.held++ = dict;
  }
  // The frame of the dict held last is left: drops it, as the live walk drops
  // a frame. False, dropping nothing, when ours is its last reference
  // (dropping it frees it, which may run code, and none but the replay's runs
  // within a step): the walk must go live, which drops it in its place.
  template <bool kLent = false>
  bool leave(Cursor& cursor) noexcept {
    if (kLent && cursor.held > lent_held_) {
      --cursor.held;  // noted while lent: its module, unchanged since, holds it
      return true;
    }
    PyObject* dict = cursor.held[-1];
    if (!drops_nothing(dict)) {
      return false;
    }
    --cursor.held;
    if (kLent) {
      lent_held_ = cursor.held;  // what is held from here on is lent
    }
    Py_DECREF(dict);
    return true;
  }
  // Takes a reference to the member dict just started, dropping the one held
  // before, as the live walk does (torch's `members` local). False, holding
  // nothing new, when that drop would free: as leave().
  template <bool kLent = false>
  bool hold_members(PyObject* dict) noexcept {
    if (kLent && members_lent_) {
      members_ = dict;
      return true;
    }
    if (members_ != nullptr && !drops_nothing(members_)) {
      return false;
    }
    if (kLent) {
      Py_XDECREF(members_);
      members_ = dict;
      members_lent_ = true;
      return true;
    }
    Py_INCREF(dict);
    Py_XDECREF(std::exchange(members_, dict));
    return true;
  }
  // From here on pins and holds are noted without references (the kLent
  // variants), above what is held now. Only where no code but the replay's
  // runs until keep() or the walk's end; the buffer's counters committed.
  void lend() noexcept {
    lent_ = true;
    lent_pins_ = pins_end_;
    lent_held_ = held_end_;
  }
  // Takes the references the lent pins and holds stand for: from here on the
  // buffer is as if every one had been taken when noted.
  void keep() noexcept {
    if (!std::exchange(lent_, false)) {
      return;
    }
    for (std::uintptr_t* pin = lent_pins_; pin != pins_end_; ++pin) {
      Py_INCREF(object(*pin));
    }
    for (PyObject** dict = lent_held_; dict != held_end_; ++dict) {
      Py_INCREF(*dict);
    }
    if (std::exchange(members_lent_, false)) {
      Py_INCREF(members_);
    }
  }
  PyObject* held_members() const { return members_; }
  // Drops every reference (lent: none was taken). A release may run a __del__,
  // which finds the buffer already empty (it may even start a walk of its own
  // on another buffer).
  void release_all() noexcept {
    PyObject** held = held_begin();
    std::uintptr_t* pins = std::exchange(pins_, nullptr);
    std::uintptr_t* pins_end = std::exchange(pins_end_, nullptr);
    PyObject** held_end = std::exchange(held_end_, nullptr);
    PyObject* members = std::exchange(members_, nullptr);
    if (std::exchange(lent_, false)) {
      pins_end = lent_pins_;  // the references taken end there
      held_end = lent_held_;
      if (std::exchange(members_lent_, false)) {
        members = nullptr;
      }
    }
    std::size_t words = std::size_t{capacity_} + held_capacity_;
    capacity_ = 0;
    held_capacity_ = 0;
    for (std::uintptr_t* pin = pins; pin != pins_end; ++pin) {
      Py_DECREF(object(*pin));
    }
    for (PyObject** dict = held; dict != held_end; ++dict) {
      Py_DECREF(*dict);
    }
    Py_XDECREF(members);
    // (After the drops: code they ran may have taken the spare or given one.)
    if (g_spare == nullptr && words <= kSpareWordsMax) {
      g_spare = pins;
      g_spare_words = words;
    } else {
      PyMem_Free(pins);
    }
  }

  // The spare's bytes (for the tests: cache_info() does not count them), and its release
  // (cache_clear()).
  static std::size_t spare_bytes() noexcept { return g_spare_words * sizeof(std::uintptr_t); }
  static void free_spare() noexcept {
    PyMem_Free(std::exchange(g_spare, nullptr));
    g_spare_words = 0;
  }

  static PyObject* object(std::uintptr_t pinned) {
    return reinterpret_cast<PyObject*>(pinned & ~std::uintptr_t{3});
  }
  static Tag tag(std::uintptr_t pinned) { return static_cast<Tag>(pinned & 3); }
  const std::uintptr_t* begin() const { return pins_; }
  const std::uintptr_t* end() const { return pins_end_; }

  // The references taken (lent ones are not: no collection runs while lent).
  int traverse(visitproc visit, void* arg) const {
    for (const std::uintptr_t* pin = pins_; pin != (lent_ ? lent_pins_ : pins_end_); ++pin) {
      Py_VISIT(object(*pin));
    }
    for (PyObject** dict = held_begin(); dict != (lent_ ? lent_held_ : held_end_); ++dict) {
      Py_VISIT(*dict);
    }
    if (!members_lent_) {
      Py_VISIT(members_);
    }
    return 0;
  }

 private:
  // Whether dropping our reference leaves others: it frees nothing, runs no code.
  static bool drops_nothing(PyObject* object) { return Py_REFCNT(object) > 1; }

  // The held dicts follow the pins in the same allocation.
  PyObject** held_begin() const { return reinterpret_cast<PyObject**>(pins_ + capacity_); }

  // One buffer a finished walk let go, of at most kSpareWordsMax words, kept
  // for the next walk to take: a small walk's pins then cost no allocation.
  // The GIL is held wherever a walk runs: one buffer takes or gives it at a time.
  static constexpr std::size_t kSpareWordsMax = 64;
  static inline std::uintptr_t* g_spare = nullptr;
  static inline std::size_t g_spare_words = 0;

  // (Sized to keep the walk iterator within one pymalloc block: iterator.cpp.)
  std::uintptr_t* pins_ = nullptr;  // the allocation
  std::uintptr_t* pins_end_ = nullptr;
  // Not beside pins_end_: cursor() would load both in one 16-byte move, which
  // the two 8-byte stores of the last commit() cannot forward to (a stall of
  // a dozen cycles on every lazy step: 25% of a warm walk's time).
  PyObject* members_ = nullptr;  // the member dict held
  PyObject** held_end_ = nullptr;
  // Lent (lend()): the pins and held dicts from these on, and members_ when
  // members_lent_, are noted without references.
  std::uintptr_t* lent_pins_ = nullptr;
  PyObject** lent_held_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint32_t held_capacity_ = 0;
  bool lent_ = false;
  bool members_lent_ = false;
};

}  // namespace pyparams
