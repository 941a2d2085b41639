// The hand-over from a replay to the live walk, at exactly the point where the
// record stopped vouching for the next read.
#include <new>

#include "cache/replay_program.h"
#include "walker/walker.h"

namespace pyparams {
namespace {

// The key frame `depth` was entered under, for an unnamed replay with dedup
// (which keeps no path): the model's own key while its parent's children dict
// is as recorded (the dict is held or was checked in this step, and holds
// it); else the record's copy, since the model may have let the key go.
PyObject* recorded_key(const WalkRecord& record, const RawVector<ReplayPosition::Frame>& frames,
                       std::size_t depth) {
  const ReplayPosition::Frame& frame = frames[depth];
  if (frame.entry < 0) {
    return nullptr;  // the root's frame: no key
  }
  const ModuleRecord& parent = record.modules[frames[depth - 1].record];
  return current_version(parent.children) == parent.children_version
      ? record.children[static_cast<std::size_t>(frame.entry)].key
      : record.key_copies[frame.record];
}

}  // namespace

// Hands the walk to the live walker at exactly the replay's point (before op
// `unfused_op` of the unfused program): frames with their cursors at the recorded positions (and
// the sizes they started with), the dedup sets holding what the replay entered and yielded. The
// record, stale, is dropped. Returns 2, or -1 with an error set.
int Walker::go_live(std::size_t unfused_op) noexcept {
  const WalkRecord& record = *replay_.record;
  const bool members_kind = options_.kind != Kind::Modules;
  auto position_after = [](const RawVector<EntryRecord>& entries, std::uint32_t first,
                           std::uint32_t read) -> Py_ssize_t {
    return read == 0 ? 0 : entries[first + read - 1].position_after;
  };
  ReplayPosition position;
  try {
    replay_position_at(record, members_kind, options_.recurse, unfused_op, position);
    for (std::size_t depth = 0; depth < position.frames.size(); ++depth) {
      const ReplayPosition::Frame& replayed = position.frames[depth];
      const ModuleRecord& module = record.modules[replayed.record];
      // Named: its full name; unnamed: the key it was reached under (see
      // ModuleFrame), held by the path: its parent's dict may have let it go.
      PyObject* label = options_.named || !options_.remove_duplicate
          ? replay_.path[depth].label
          : recorded_key(record, position.frames, depth);
      if (!push(module.module, OwnedRef::borrow(label))) {
        return -1;
      }
      ModuleFrame& frame = live_.stack.back();
      if (options_.named) {
        frame.full_name = !replay_.path[depth].key_only();
        frame.key_only_length = replay_.path[depth].key_only_length;
      }
      frame.record = replayed.record;
      frame.entries_read = replayed.read;
      if (replayed.started) {
        frame.children_started = true;
        frame.children.start_at(module.children, module.child_count,
                                position_after(record.children, module.first_child, replayed.read),
                                module.child_count - replayed.read);
      }
      if (replayed.read != 0) {
        // torch's `module` variable: the child the frame entered last, if it
        // was the entry read last (pinned by the replay, or on its path).
        const EntryRecord& last = record.children[module.first_child + replayed.read - 1];
        if (last.entered != EntryRecord::kNotEntered) {
          frame.current_child =
              OwnedRef::borrow(record.modules[static_cast<std::size_t>(last.entered)].module);
        }
      }
    }
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();  // a walk that could not rebuild its position would be wrong: it ends
    return -1;
  }
  // (A deep module's name, held as its key alone, is built at its first member.)
  PyObject* members_name =
      options_.named && !replay_.path.back().key_only() ? replay_.path.back().label : nullptr;
  OwnedRef pending_module;
  OwnedRef pending_name;
  live_.members_mapping =
      OwnedRef::borrow(replay_.pins.held_members());  // the member dict started last
  if (position.members != ReplayPosition::Members::None) {
    const ModuleRecord& module = record.modules[position.members_record];
    recorder_.members_record = position.members_record;
    if (position.members == ReplayPosition::Members::Active) {
      live_.members_mapping = OwnedRef::borrow(module.members);
      if (position.members_read != 0) {
        live_.members.start_at(
            module.members, module.member_count,
            position_after(record.members, module.first_member, position.members_read),
            module.member_count - position.members_read);
      }  // else started below, once the last member dict is let go
      live_.members_name = OwnedRef::borrow(members_name);
      live_.members_active = true;
    } else {
      // Entered, its members not read yet: the live walk reads them now.
      pending_module = OwnedRef::borrow(module.module);
      pending_name = OwnedRef::borrow(members_name);
    }
  }
  if (last_pair_) {
    // The module of the pair yielded last, when the replay left its frame
    // already (the pins or the path hold it until unpin_all, below).
    PyObject* yielded = PyTuple_GET_ITEM(last_pair_.get(), 1);
    if (live_.stack.empty() || live_.stack.back().module.get() != yielded) {
      let_pair_keep_no_module(yielded);
    }
  }
  if (members_kind && position.members != ReplayPosition::Members::Pending) {
    // `_named_members`' `module` variable: the module entered last (pinned,
    // or on the path); a pending one takes its place in start_members below.
    live_.members_module = OwnedRef::borrow(record.modules[position.members_record].module);
  }
  if (options_.remove_duplicate) {
    for (std::uintptr_t pinned : replay_.pins) {
      (PinBuffer::tag(pinned) == PinBuffer::kModule ? live_.seen_modules : live_.seen_members)
          .insert(PinBuffer::object(pinned));
    }
  }
  unpin_all();
  drop_record(root_.get(), record_slot_, replay_.record.get());
  ++cache_counters().invalidations;
  replay_.retired = std::move(replay_.record);  // the caller may still read it in this step
  phase_ = Phase::Live;
  if (position.members == ReplayPosition::Members::Active && position.members_read == 0) {
    live_.members.start(live_.members_mapping.get());  // an exact dict: cannot fail
  }
  if (pending_module) {
    return start_members(pending_module.get(), pending_name.get(), false) ? 2 : -1;
  }
  return 2;
}

bool Walker::close_delegated_generator() {
  if (options_.kind != Kind::Modules) {
    clear();  // their one `yield from` ends with the generator it waited on
    return true;
  }
  if (phase_ == Phase::Replaying) {
    // Between steps: hand over before the op the next step would run.
    const WalkRecord& record = *replay_.record;
    auto at = static_cast<std::size_t>(replay_.at - record.program.data());
    if (go_live(unfused_op_index(record.program, at, 0)) < 0) {
      fail();
      return false;
    }
  }
  while (live_.stack.size() > 1) {
    pop();  // the child generators torch closes, innermost first
  }
  return true;
}

}  // namespace pyparams
