// A record compiled into the flat list of checks a replay makes (replay_op.h),
// and the live walk's position before any of them, to go on live from there.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cache/walk_cache.h"

namespace pyparams {

// Where a replay stands before an op: what the live walk has at that point.
struct ReplayPosition {
  struct Frame {
    std::uint32_t record;  // the ModuleRecord
    std::uint32_t read;    // children entries read
    bool started;          // its children dict was read
    std::int32_t entry;    // the children entry it was reached under, -1 for the root
  };
  enum class Members { None, Pending, Active };
  RawVector<Frame> frames;
  Members members = Members::None;  // Pending: the module was entered, its members not yet read
  std::uint32_t members_record = 0;
  std::uint32_t members_read = 0;
};

// Compiles `record` (a walk of members when `members_kind`, else of modules)
// into its `program`, fused. Throws std::bad_alloc.
void build_replay_program(WalkRecord& record, bool members_kind, bool recurse);

// Where part `part` of op `op` of a fused program stands in the unfused one.
std::size_t unfused_op_index(const RawVector<ReplayOp>& program, std::size_t op,
                             std::uint32_t part);

// The position before op `op` of the unfused program. Throws std::bad_alloc.
void replay_position_at(const WalkRecord& record, bool members_kind, bool recurse, std::size_t op,
                        ReplayPosition& position);

}  // namespace pyparams
