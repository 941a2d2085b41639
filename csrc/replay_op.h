// The ops of a replay: a record compiled into the checks the live walk's reads
// call for, in order (replay_program.h builds them, Walker runs them).
#pragma once

#include <cstdint>

namespace pyparams {

// One check or action of a replay. A step (one next() call) runs ops up to the
// next yield; a check already made in the same step is not made again, since
// no code but the replay's own runs within a step.
enum class ReplayOpKind : std::uint8_t {
  PinRoot,      // the root is entered (pinned when removing duplicates)
  CheckModule,  // module `index` reads as recorded: class, version, __dict__
  Enter,        // CheckModule, then the module is entered (pinned; named: its name kept)
  Members,      // the member dict of module `index` is unchanged (`hold`: and held,
                // for a later step reads it again)
  Children,     // the children dict of module `index` is unchanged (`hold` alike)
  Yield,        // member entry `index` (pinned when removing duplicates)
  YieldModule,  // module `index` (walks of modules)
  Duplicate,    // children entry `index` was a duplicate: the replay checks it still is
  Live,         // the record cannot vouch for what comes next: the walk goes live
  End,
  // Fused: the ops that most often follow one another, run as one (fewer
  // dispatches). Each runs its parts in order; a failure names its part.
  EnterMembers,           // Enter, Members of the module entered (`entry`: its children entry)
  EnterMembersYield,      // EnterMembers, then Yield of the module's first member entry
  MembersYield,           // Members of module `index`, Yield of member entry `entry`
  ModuleChildren,         // CheckModule, Children of module `index`
  MembersModuleChildren,  // Members, CheckModule, Children of module `index`
  // `entry` Children ops in a row that each leave their frame (the end of a
  // deep path): their modules are WalkRecord::leave_runs[index...].
  LeaveRun,
};

struct ReplayOp {
  std::uint32_t index;     // a ModuleRecord, or a member or children entry (see the kind)
  std::uint32_t entry;     // a second index, for Enter and the fused ops (see the kind)
  std::uint32_t kind : 8;  // a ReplayOpKind (a whole byte: one load to dispatch on)
  // Members, Children: hold the dict (of the last part when fused), as a later
  // step reads it again (Members: the member dict started, as the live walk).
  std::uint32_t hold : 1;
  // Children: its module's frame is left in this step (its dict read for the
  // last time): the dict held since an earlier step is let go.
  std::uint32_t leave : 1;
  std::uint32_t depth : 22;  // Enter: the depth of its frame (records are shallower)
};

// How many ops of the unfused program a (fused) op stands for.
constexpr std::uint32_t replay_op_parts(const ReplayOp& op) {
  switch (static_cast<ReplayOpKind>(op.kind)) {
    case ReplayOpKind::EnterMembers:
    case ReplayOpKind::MembersYield:
    case ReplayOpKind::ModuleChildren:
      return 2;
    case ReplayOpKind::EnterMembersYield:
    case ReplayOpKind::MembersModuleChildren:
      return 3;
    case ReplayOpKind::LeaveRun:
      return op.entry;
    default:
      return 1;
  }
}

}  // namespace pyparams
