// Recording a walk for the warm-walk cache (walk_cache.h): what the live walk
// reads, with the versions it read, kept when the walk completes unchanged.
#include <new>
#include <utility>

#include "cache/replay_program.h"
#include "walker/memo_hash.h"
#include "walker/module_attributes.h"
#include "walker/walker.h"

namespace pyparams {
namespace {

// The largest walks recorded (96 bytes a module, 32 an entry, and 16 an op
// of the replay's program, about 3 ops a module): a bigger tree is walked
// live, its record would cost more memory than it saves time.
constexpr std::size_t kMaxRecordedModules = std::size_t{1} << 17;
constexpr std::size_t kMaxRecordedEntries = std::size_t{1} << 19;
static_assert(kMaxRecordedModules < (std::size_t{1} << 22), "an op's depth field holds any depth");

}  // namespace

// The first read of a walk: here it finds a record of the same walk of this
// root to replay, or (from the second walk of a root on) records one.
bool Walker::begin_cached_walk() {
  // A prefix that is a str subclass joins names with its own `+`: user code
  // in every step, which only the live walk holds references across.
  if (!cache_enabled() || (options_.named && !PyUnicode_CheckExact(root_name_.get()))) {
    return true;
  }
  // torch's named_modules hashes the root before anything else: a hash of
  // its own is code no replay runs (and the live walk records none).
  if ((options_.recurse || options_.kind == Kind::Modules) && !module_hash_is_identity(root_.get()))
      [[unlikely]] {
    return true;
  }
  replay_.record = find_record(root_.get(), record_slot_);
  if (replay_.record) {
    try {
      WalkRecord& record = *replay_.record;
      if (!replay_.pins.reserve(record.program_pins, record.program_held)) {
        throw std::bad_alloc();
      }
      if (options_.named || !options_.remove_duplicate) {
        reserve_path(record.depth + 1);
        // The root's entry: its name (named walks); no key, and the walk holds it.
        PyObject* root_label = options_.named ? root_name_.get() : nullptr;
        Py_XINCREF(root_label);
        replay_.path.push_back({root_label, nullptr, 0});
      }
      if (options_.named) {
        replay_.names_cached = record.use_names(root_name_.get());
        replay_.names_generation = record.names_generation;
      }
    } catch (const std::bad_alloc&) {
      replay_.record.reset();  // no replay, no harm: walk live
      return true;
    }
    ++cache_counters().hits;
    phase_ = Phase::Replaying;
    live_.root_entered = true;  // the program enters the root; a walk going live goes on below it
    replay_.at = replay_.record->program.data();
    replay_.stamp = change_stamp();
    return true;
  }
  ++cache_counters().misses;
  if (!walked_before(root_.get(), kMaxRecordedModules)) {
    recorder_.counting =
        true;  // a root walked once may never be walked again: record on its second walk
    return true;
  }
  recorder_.record = RecordPtr::make();
  if (!recorder_.record) {
    return true;  // out of memory: no record, no harm
  }
  recorder_.record->epoch = dispatch_epoch();
  recorder_.record->dispatch_from = static_cast<int>(options_.dispatch);
  // The root's versions first, then the dispatch chain asked again: the
  // record's "no override at the root" rests on reads made after them.
  if (!record_enter(root_.get()) || !root_has_no_override_since_recorded()) {
    abandon_recording();
  }
  return true;
}

// Appends the ModuleRecord of `module`, entered now. False when its reads
// cannot be proven by versions (no class version, no instance __dict__).
bool Walker::record_enter(PyObject* module) {
  if (recorder_.record->modules.size() >= kMaxRecordedModules) {
    return false;  // a huge tree stays live: its record would outweigh the walk
  }
  PyTypeObject* type = Py_TYPE(module);
  if (type_version(type) == 0 || !module_class_info(type).plain_attributes) {
    return false;
  }
  bool inline_attributes = has_inline_attributes(module);
  PyObject** dict = _PyObject_GetDictPtr(module);  // builds the __dict__ of inline attributes
  // A key that is no exact str could run code in the lookups torch makes in
  // this dict on every walk (its __eq__ on a colliding hash), which a replay
  // skips: such a module is walked live, every time.
  if (dict == nullptr || *dict == nullptr || !PyDict_CheckExact(*dict) ||
      !keys_are_exact_str(*dict)) {
    return false;
  }
  if (inline_attributes) {
    CacheCounters& counters = cache_counters();
    ++counters.dicts_built;
    counters.dict_bytes += object_bytes(*dict);
  }
  Py_ssize_t dict_offset = reinterpret_cast<char*>(dict) - reinterpret_cast<char*>(module);
  if (dict_offset != instance_dict_offset(type)) {
    return false;  // a layout the replay's one-load check does not know
  }
  ModuleRecord record;
  record.module = module;
  record.type = type;
  record.type_version = type_version(type);
  record.dict_offset = dict_offset;
  record.dict = *dict;
  record.dict_version = follow_dict(*dict);
  if (record.dict_version == 0) {
    return false;
  }
  recorder_.last_entered = static_cast<std::uint32_t>(recorder_.record->modules.size());
  recorder_.record->modules.push_back(record);
  return true;
}

// Notes the member (or children) dict of ModuleRecord `index`, just read.
void Walker::record_mapping(std::uint32_t index, PyObject* mapping, bool from_dict, bool children) {
  ModuleRecord& record = recorder_.record->modules[index];
  if (!from_dict || !PyDict_CheckExact(mapping) ||
      current_version(record.dict) != record.dict_version) {
    abandon_recording();
    return;
  }
  auto size = static_cast<std::uint32_t>(PyDict_GET_SIZE(mapping));
  if (recorder_.record->members.size() + recorder_.record->children.size() + size >
      kMaxRecordedEntries) {
    abandon_recording();
    return;
  }
  Version version = follow_dict(mapping);
  if (version == 0) {
    abandon_recording();
    return;
  }
  if (children) {
    record.children = mapping;
    record.children_version = version;
    record.first_child = static_cast<std::uint32_t>(recorder_.record->children.size());
    record.child_count = size;
    recorder_.record->children.resize(recorder_.record->children.size() + size);
  } else {
    record.members = mapping;
    record.members_version = version;
    record.first_member = static_cast<std::uint32_t>(recorder_.record->members.size());
    record.member_count = 0;  // counted as they are read
  }
}

void Walker::abandon_recording() noexcept {
  recorder_.record.reset();
}

// A complete walk: keep its record if everything it read is still as read,
// checked parents first (each module is alive while its parent's children
// dict is unchanged, which was checked just before).
void Walker::finish_recording() {
  RecordPtr record = std::move(recorder_.record);
  if (options_.kind == Kind::Modules) {
    record->items = static_cast<std::uint32_t>(record->modules.size());
  } else {
    for (const EntryRecord& entry : record->members) {
      record->items += entry.yielded ? 1 : 0;
    }
  }
  for (const ModuleRecord& module : record->modules) {
    // (No stamp proves anything yet: every version is compared.)
    bool unchanged = read_module(module, false) == ModuleRead::AsRecorded &&
        (module.members == nullptr ||
         dict_unchanged(false, module.members, module.members_version)) &&
        (module.children == nullptr ||
         dict_unchanged(false, module.children, module.children_version));
    if (!unchanged) {
      return;
    }
  }
  record->proven_at = change_stamp();  // every dict checked just now, no code ran since
  // Compiled here, by the recording walk (a root's second), so that its
  // first replay costs what every later one does.
  try {
    // Kept for long: no growth slack (up to half of it, appended as the walk
    // went). Before compiling, which links ops to the modules by address.
    record->modules.shrink_to_fit();
    record->members.shrink_to_fit();
    build_replay_program(*record, options_.kind != Kind::Modules, options_.recurse);
  } catch (const std::bad_alloc&) {
    return;  // no program, no record: the next walk records again
  }
  if (!record->copy_keys()) {
    return;  // (allocating a str runs no collection: the proof above still stands)
  }
  store_record(root_.get(), record_slot_, std::move(record));
}

}  // namespace pyparams
