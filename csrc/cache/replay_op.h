// The ops of a replay: a record compiled into the checks the live walk's reads
// call for, in order (replay_program.h builds them, Walker runs them).
#pragma once

#include <cstdint>

namespace pyparams {

struct ModuleRecord;

// One check or action of a replay. A step (one next() call) runs ops up to the
// next yield; a check already made in the same step is not made again, since
// no code but the replay's own runs within a step.
enum class ReplayOpKind : std::uint8_t {
  PinRoot,      // the root is entered (pinned when removing duplicates)
  CheckModule,  // the op's module reads as recorded: class, version, __dict__
  Enter,        // CheckModule, then the module is entered (pinned; named: its name kept)
  Members,      // the op's module's member dict is unchanged (`hold`: and held,
                // for a later step reads it again)
  Children,     // the op's module's children dict is unchanged (`hold` alike)
  Yield,        // member entry `entry` (pinned when removing duplicates)
  YieldModule,  // the op's module (walks of modules)
  Duplicate,    // children entry `entry` was a duplicate: the replay checks it still is
  // Member entry `entry` was a duplicate (first yielded by this walk): torch's
  // `v in memo` hashes it again, so the replay checks its hash is still its id.
  MemberDuplicate,
  Live,  // the record cannot vouch for what comes next: the walk goes live
  End,
  // Fused: the ops that most often follow one another, run as one (fewer
  // dispatches). Each runs its parts in order; a failure names its part.
  EnterMembers,           // Enter, Members of the module entered
  EnterMembersYield,      // EnterMembers, then Yield of the module's first member entry
  MembersYield,           // Members of the op's module, Yield of member entry `entry`
  ModuleChildren,         // CheckModule, Children of the op's module
  MembersModuleChildren,  // Members, CheckModule, Children of the op's module
  // `extent` Children ops in a row that each leave their frame (the end of a
  // deep path): their modules are WalkRecord::leave_runs[entry...].
  LeaveRun,
};

// How many ops of the unfused program an op of `kind` stands for; `run`: a
// LeaveRun's length.
constexpr std::uint32_t replay_op_parts(ReplayOpKind kind, std::uint32_t run) {
  switch (kind) {
    case ReplayOpKind::EnterMembers:
    case ReplayOpKind::MembersYield:
    case ReplayOpKind::ModuleChildren:
      return 2;
    case ReplayOpKind::EnterMembersYield:
    case ReplayOpKind::MembersModuleChildren:
      return 3;
    case ReplayOpKind::LeaveRun:
      return run;
    default:
      return 1;
  }
}

// An op as the replay runs it: 16 bytes, the record it reads linked by address
// (one load, no index arithmetic, on the hot path).
struct ReplayOp {
  // The ModuleRecord the op reads: set for CheckModule, Enter*, Members*,
  // Children, *ModuleChildren and YieldModule; null for the others.
  ModuleRecord* module;
  // Enter*: the children entry the module was entered under (a named replay
  // builds its name from that key); Yield, MembersYield: the member entry
  // yielded; Duplicate: the children entry; MemberDuplicate: the member
  // entry; LeaveRun: its first module's
  // place in WalkRecord::leave_runs.
  std::uint32_t entry;
  std::uint32_t kind : 8;  // a ReplayOpKind (a whole byte: one load to dispatch on)
  // Members, Children: hold the dict (of the last part when fused), as a later
  // step reads it again (Members: the member dict started, as the live walk).
  std::uint32_t hold : 1;
  // Children: its module's frame is left in this step (its dict read for the
  // last time): the dict held since an earlier step is let go.
  std::uint32_t leave : 1;
  // Enter*: the depth of its frame (records are shallower); LeaveRun: how
  // many frames it leaves.
  std::uint32_t extent : 22;
};

constexpr std::uint32_t replay_op_parts(const ReplayOp& op) {
  return replay_op_parts(static_cast<ReplayOpKind>(op.kind), op.extent);
}

}  // namespace pyparams
