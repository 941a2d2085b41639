#include "cache/replay_program.h"

#include <Python.h>

#include <algorithm>
#include <limits>
#include <utility>

namespace pyparams {
namespace {

using Kind = ReplayOpKind;
using Frame = ReplayPosition::Frame;
using Members = ReplayPosition::Members;

// An op as the tracer writes it, by indices into the record (fused in place,
// then linked into a ReplayOp).
struct TracedOp {
  std::uint32_t index;  // a ModuleRecord; for Yield a member entry, for Duplicate a children entry
  std::uint32_t entry;  // Enter: its children entry; MembersYield: its member entry
  std::uint32_t kind : 8;
  std::uint32_t hold : 1;
  std::uint32_t leave : 1;
  std::uint32_t depth : 22;  // Enter: its frame's depth; LeaveRun: its length
};

std::uint32_t parts(const TracedOp& op) {
  return replay_op_parts(static_cast<Kind>(op.kind), op.depth);
}

// Walks a record as the live walk would walk the recorded tree, deciding at
// each read which check it calls for. It either writes the program, or stops
// before op `stop_at` with the live walk's position there: both come from this
// one walk, so a program's ops and the positions between them always agree.
class ReplayTracer {
 public:
  ReplayTracer(const WalkRecord& record, bool members_kind, bool recurse,
               RawVector<TracedOp>* program, std::size_t stop_at, ReplayPosition& position)
      : record_(record),
        members_kind_(members_kind),
        recurse_(recurse),
        program_(program),
        stop_at_(stop_at),
        position_(position),
        module_checked_(record.modules.size(), 0),
        members_checked_(record.modules.size(), 0),
        children_checked_(record.modules.size(), 0) {}

  void run();
  std::size_t pins() const { return pins_; }

 private:
  // False when the op is `stop_at`: the position is the one before it.
  bool emit(Kind kind, std::uint32_t index, std::uint32_t entry = 0, std::uint32_t depth = 0,
            bool hold = false) {
    if (emitted_ == stop_at_) {
      return false;
    }
    ++emitted_;
    if (program_ != nullptr) {
      program_->push_back(
          {index, entry, static_cast<std::uint32_t>(kind), hold ? 1u : 0u, 0u, depth});
    }
    pins_ += kind == Kind::PinRoot || kind == Kind::Enter || kind == Kind::Yield ? 1 : 0;
    return true;
  }
  // Emits `kind` for module `index` unless this step checked it already.
  bool check(RawVector<std::uint32_t>& checked, Kind kind, std::uint32_t index) {
    if (checked[index] == step_) {
      return true;
    }
    checked[index] = step_;
    return emit(kind, index);
  }
  // After a yield (the caller's code runs) or a check that may run code.
  void new_step() { ++step_; }
  // Notes that the top frame's children dict was checked now, by op `op`.
  void children_checked(std::uint32_t op) {
    FrameOps& frame = frame_ops_.back();
    if (frame.started == kNoOp) {
      frame.started = op;
      frame.started_in = step_;
    }
    frame.checked = op;
  }
  void leave_frame();
  bool start_members(std::uint32_t index);
  bool next_member();
  bool next_child();

  const WalkRecord& record_;
  bool members_kind_;
  bool recurse_;
  RawVector<TracedOp>* program_;
  std::size_t stop_at_;
  ReplayPosition& position_;
  std::size_t emitted_ = 0;
  std::size_t pins_ = 0;
  // Per open frame: the op that started reading its children dict, the step
  // it ran in, and the op that checked the dict last.
  static constexpr std::uint32_t kNoOp = std::numeric_limits<std::uint32_t>::max();
  struct FrameOps {
    std::uint32_t started = kNoOp;
    std::uint32_t started_in = 0;
    std::uint32_t checked = kNoOp;
  };
  RawVector<FrameOps> frame_ops_;
  std::uint32_t step_ = 1;
  std::uint32_t next_module_ = 1;  // the ModuleRecord the next module entered must have
  // The step that last checked each module, its member dict, its children dict.
  RawVector<std::uint32_t> module_checked_;
  RawVector<std::uint32_t> members_checked_;
  RawVector<std::uint32_t> children_checked_;
};

void ReplayTracer::run() {
  // The live walk enters the root before reading anything.
  if (!emit(Kind::PinRoot, 0)) {
    return;
  }
  if (recurse_) {
    position_.frames.push_back({0, 0, false, -1});
    frame_ops_.push_back({});
  }
  if (!members_kind_) {
    if (!emit(Kind::YieldModule, 0)) {
      return;
    }
    new_step();
  } else if (!start_members(0)) {
    return;
  }
  for (;;) {
    if (position_.members == Members::Active) {
      if (!next_member()) {
        return;
      }
      continue;
    }
    if (position_.frames.empty()) {
      emit(Kind::End, 0);
      return;
    }
    if (!next_child()) {
      return;
    }
  }
}

// Reads the member dict of ModuleRecord `index`, just entered.
bool ReplayTracer::start_members(std::uint32_t index) {
  position_.members = Members::Pending;
  position_.members_record = index;
  position_.members_read = 0;
  const ModuleRecord& module = record_.modules[index];
  if (!check(module_checked_, Kind::CheckModule, index)) {
    return false;
  }
  if (module.members == nullptr) {
    emit(Kind::Live, index);
    return false;
  }
  members_checked_[index] = step_;
  // Held, even empty: the live walk holds the member mapping it started last.
  if (!emit(Kind::Members, index, 0, 0, /*hold=*/true)) {
    return false;
  }
  position_.members = Members::Active;
  return true;
}

// One entry of the active member dict, or its end. False: the trace is over.
bool ReplayTracer::next_member() {
  std::uint32_t index = position_.members_record;
  const ModuleRecord& module = record_.modules[index];
  if (!check(members_checked_, Kind::Members, index)) {
    return false;
  }
  if (position_.members_read == module.member_count) {
    position_.members = Members::None;
    return true;
  }
  std::uint32_t entry = module.first_member + position_.members_read;
  if (!record_.members[entry].yielded) {
    // None, or a duplicate: read, not yielded (a duplicate hashed again)
    if (record_.members[entry].value != Py_None && !emit(Kind::MemberDuplicate, entry)) {
      return false;
    }
    ++position_.members_read;
    return true;
  }
  if (!emit(Kind::Yield, entry)) {
    return false;
  }
  ++position_.members_read;
  new_step();
  return true;
}

// One entry of the top frame's children dict, or its end. False: the trace is over.
bool ReplayTracer::next_child() {
  Frame& top = position_.frames.back();
  std::uint32_t index = top.record;
  const ModuleRecord& module = record_.modules[index];
  if (!top.started) {
    // Reading `_modules` reads the module again.
    if (!check(module_checked_, Kind::CheckModule, index)) {
      return false;
    }
    if (module.children == nullptr) {
      emit(Kind::Live, index);
      return false;
    }
    children_checked_[index] = step_;
    if (!emit(Kind::Children, index, 0, 0, /*hold=*/module.child_count != 0)) {
      return false;
    }
    children_checked(static_cast<std::uint32_t>(emitted_ - 1));
    top.started = true;
  } else {
    std::size_t emitted_before = emitted_;
    if (!check(children_checked_, Kind::Children, index)) {
      return false;
    }
    if (emitted_ != emitted_before) {  // not left out as checked in this step
      children_checked(static_cast<std::uint32_t>(emitted_ - 1));
    }
  }
  if (top.read == module.child_count) {
    leave_frame();  // (named replays drop its name at the next Enter)
    return true;
  }
  std::uint32_t entry = module.first_child + top.read;
  const EntryRecord& child = record_.children[entry];
  if (child.value == Py_None) {
    ++top.read;
    return true;
  }
  if (child.entered == EntryRecord::kNotEntered) {
    if (!emit(Kind::Duplicate, entry)) {
      return false;
    }
    ++top.read;
    new_step();  // its check looks the class up, which may run code
    return true;
  }
  auto entered = static_cast<std::uint32_t>(child.entered);
  if (entered != next_module_) {
    emit(Kind::Live, entered);
    return false;
  }
  auto depth = static_cast<std::uint32_t>(position_.frames.size());
  if (!emit(Kind::Enter, entered, entry, depth)) {
    return false;
  }
  module_checked_[entered] = step_;
  ++next_module_;
  ++top.read;
  position_.frames.push_back({entered, 0, false, static_cast<std::int32_t>(entry)});
  frame_ops_.push_back({});
  if (!members_kind_) {
    if (!emit(Kind::YieldModule, entered)) {
      return false;
    }
    new_step();
    return true;
  }
  return start_members(entered);
}

// The top frame is left, after its children dict's last read (this step's
// check of it). A dict held since an earlier step is let go there (`leave`);
// one held in this step is read by no later step: it is not held at all.
void ReplayTracer::leave_frame() {
  const FrameOps& frame = frame_ops_.back();
  if (program_ != nullptr && frame.started != kNoOp && (*program_)[frame.started].hold != 0) {
    if (frame.started_in == step_) {
      (*program_)[frame.started].hold = 0;
    } else {
      (*program_)[frame.checked].leave = 1;
    }
  }
  frame_ops_.pop_back();
  position_.frames.pop_back();
}

// The most children dicts a replay of `ops` holds at once.
std::size_t most_held(const RawVector<TracedOp>& ops) {
  std::size_t held = 0;
  std::size_t most = 0;
  for (const TracedOp& op : ops) {
    if (op.hold != 0 && op.kind == static_cast<std::uint32_t>(Kind::Children)) {
      most = std::max(most, ++held);
    }
    held -= op.leave;
  }
  return most;
}

bool is(const TracedOp& op, Kind kind) {
  return op.kind == static_cast<std::uint32_t>(kind);
}

TracedOp fused(Kind kind, std::uint32_t index, std::uint32_t entry, std::uint32_t depth,
               std::uint32_t hold) {
  return {index, entry, static_cast<std::uint32_t>(kind), hold, 0, depth};
}

bool leaves_frame(const TracedOp& op) {
  return is(op, Kind::Children) && op.leave != 0 && op.hold == 0;
}

// Fuses the runs of ops that most often follow one another (replay_op.h).
void fuse(const RawVector<TracedOp>& ops, WalkRecord& record, RawVector<TracedOp>& program,
          RawVector<ModuleRecord*>& leave_runs) {
  std::size_t count = ops.size();
  for (std::size_t at = 0; at < count;) {
    const TracedOp& first = ops[at];
    std::size_t leaving = 0;  // frames left one after another from here
    while (at + leaving < count && leaves_frame(ops[at + leaving])) {
      ++leaving;
    }
    if (leaving >= 2) {
      program.push_back(fused(Kind::LeaveRun, static_cast<std::uint32_t>(leave_runs.size()), 0,
                              static_cast<std::uint32_t>(leaving), 0));
      for (std::size_t part = 0; part < leaving; ++part) {
        leave_runs.push_back(&record.modules[ops[at + part].index]);
      }
      at += leaving;
      continue;
    }
    const TracedOp* second = at + 1 < count ? &ops[at + 1] : nullptr;
    const TracedOp* third = at + 2 < count ? &ops[at + 2] : nullptr;
    auto same_module = [&first](const TracedOp* op, Kind kind) {
      return op != nullptr && is(*op, kind) && op->index == first.index;
    };
    if (is(first, Kind::Enter) && same_module(second, Kind::Members) && third != nullptr &&
        is(*third, Kind::Yield) && third->index == record.modules[first.index].first_member) {
      program.push_back(
          fused(Kind::EnterMembersYield, first.index, first.entry, first.depth, second->hold));
    } else if (is(first, Kind::Enter) && same_module(second, Kind::Members)) {
      program.push_back(
          fused(Kind::EnterMembers, first.index, first.entry, first.depth, second->hold));
    } else if (is(first, Kind::Members) && !first.hold && second != nullptr &&
               is(*second, Kind::Yield)) {
      program.push_back(fused(Kind::MembersYield, first.index, second->index, 0, 0));
    } else if (is(first, Kind::Members) && !first.hold && same_module(second, Kind::CheckModule) &&
               same_module(third, Kind::Children) && third->leave == 0) {
      program.push_back(fused(Kind::MembersModuleChildren, first.index, 0, 0, third->hold));
    } else if (is(first, Kind::CheckModule) && same_module(second, Kind::Children) &&
               second->leave == 0) {
      program.push_back(fused(Kind::ModuleChildren, first.index, 0, 0, second->hold));
    } else {
      program.push_back(first);
    }
    at += parts(program.back());
  }
}

// The unfused program's checks, each once, and its items (WalkRecord::Straight).
void build_straight(const RawVector<TracedOp>& ops, WalkRecord& record) {
  using Straight = WalkRecord::Straight;
  Straight straight;
  RawVector<std::uint8_t> what(record.modules.size(), 0);
  straight.usable = true;
  for (const TracedOp& op : ops) {
    switch (static_cast<Kind>(op.kind)) {
      case Kind::CheckModule:
      case Kind::Enter:
        what[op.index] |= Straight::kModule;
        break;
      case Kind::Members:
        what[op.index] |= Straight::kMembers;
        break;
      case Kind::Children:
        what[op.index] |= Straight::kChildren;
        break;
      case Kind::Yield:
        straight.items.push_back(record.members[op.index].value);
        break;
      case Kind::YieldModule:
        straight.items.push_back(record.modules[op.index].module);
        break;
      case Kind::Duplicate:
        straight.duplicates.push_back(op.index);
        break;
      case Kind::Live:
        straight.usable = false;
        break;
      default:  // PinRoot, End: nothing read; MemberDuplicate: its first occurrence is an item
        break;
    }
  }
  for (std::size_t index = 0; index < what.size(); ++index) {
    if (what[index] == 0) {
      continue;
    }
    // A module's dicts are alive while it reads as recorded: its own read comes first.
    straight.usable = straight.usable && (what[index] & Straight::kModule) != 0;
    straight.reads.push_back({&record.modules[index], what[index]});
  }
  record.straight = std::move(straight);
}

// The runtime form of a fused op: the module it reads by address.
ReplayOp link(const TracedOp& traced, WalkRecord& record) {
  ReplayOp op{nullptr, 0, traced.kind, traced.hold, traced.leave, 0};
  switch (static_cast<Kind>(traced.kind)) {
    case Kind::PinRoot:
    case Kind::Live:
    case Kind::End:
      break;
    case Kind::Yield:
    case Kind::Duplicate:
    case Kind::MemberDuplicate:
      op.entry = traced.index;
      break;
    case Kind::LeaveRun:
      op.entry = traced.index;
      op.extent = traced.depth;
      break;
    case Kind::Enter:
    case Kind::EnterMembers:
    case Kind::EnterMembersYield:
      op.extent = traced.depth;
      [[fallthrough]];
    default:  // the ops on a module
      op.module = &record.modules[traced.index];
      op.entry = traced.entry;
      break;
  }
  return op;
}

}  // namespace

void build_replay_program(WalkRecord& record, bool members_kind, bool recurse) {
  ReplayPosition end;
  RawVector<TracedOp> ops;
  ReplayTracer tracer(record, members_kind, recurse, &ops, std::numeric_limits<std::size_t>::max(),
                      end);
  tracer.run();
  build_straight(ops, record);
  RawVector<TracedOp> fused_ops;
  RawVector<ModuleRecord*> leave_runs;
  fused_ops.reserve(ops.size());
  // Linked by address: the record's arrays are complete and never move again.
  fuse(ops, record, fused_ops, leave_runs);
  RawVector<ReplayOp> program;
  program.reserve(fused_ops.size());
  for (const TracedOp& traced : fused_ops) {
    program.push_back(link(traced, record));
  }
  leave_runs.shrink_to_fit();
  record.program.swap(program);
  record.leave_runs.swap(leave_runs);
  record.program_pins = tracer.pins();
  record.program_held = most_held(ops);
}

std::size_t unfused_op_index(const RawVector<ReplayOp>& program, std::size_t op,
                             std::uint32_t part) {
  std::size_t index = part;
  for (std::size_t before = 0; before < op; ++before) {
    index += replay_op_parts(program[before]);
  }
  return index;
}

void replay_position_at(const WalkRecord& record, bool members_kind, bool recurse, std::size_t op,
                        ReplayPosition& position) {
  ReplayTracer tracer(record, members_kind, recurse, nullptr, op, position);
  tracer.run();
}

}  // namespace pyparams
