// torch's dispatch chain, written down once. Every enum, name, level lookup
// and parser of it (here, the walker, the entry points, the patch through
// _C.DISPATCH_CHAIN) is derived from the two tables below.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyparams {

// What a walk yields: the module's own entries of `_parameters`, of
// `_buffers`, or the modules themselves.
enum class Kind : std::uint8_t { Parameters = 0, Buffers = 1, Modules = 2 };
constexpr std::size_t kKindCount = 3;

// The nn.Module methods on the chain, with their Python names.
#define PYPARAMS_CHAIN_METHODS(X)        \
  X(Parameters, "parameters")            \
  X(NamedParameters, "named_parameters") \
  X(Buffers, "buffers")                  \
  X(NamedBuffers, "named_buffers")       \
  X(Modules, "modules")                  \
  X(NamedMembers, "_named_members")      \
  X(NamedModules, "named_modules")

enum class Method : int {
#define PYPARAMS_METHOD_ENUM(method, name) method,
  PYPARAMS_CHAIN_METHODS(PYPARAMS_METHOD_ENUM)
#undef PYPARAMS_METHOD_ENUM
      Count,  // also: "no method at this level"
};
constexpr std::size_t kMethodCount = static_cast<std::size_t>(Method::Count);

constexpr const char* kMethodNames[kMethodCount] = {
#define PYPARAMS_METHOD_NAME(method, name) name,
    PYPARAMS_CHAIN_METHODS(PYPARAMS_METHOD_NAME)
#undef PYPARAMS_METHOD_NAME
};

// The levels of the chain, root first: where a walk starts is the first
// level whose override on the root it honours. Children: below the root,
// only every child's named_modules.
enum class Dispatch : int { Public = 0, Named, NamedMembers, NamedModules, Children };
constexpr std::size_t kLevelCount = 5;
constexpr const char* kChildrenLevelName = "children";

// The chain per kind of walk: the method torch's base implementation calls
// at each level above Children (Method::Count: the kind has no such level).
//   parameters -> named_parameters -> _named_members -> named_modules (root)
//   buffers    -> named_buffers    -> _named_members -> named_modules (root)
//   modules    ->                                       named_modules (root)
// and below the root, `named_modules` of every child.
constexpr Method kChain[kKindCount][kLevelCount - 1] = {
    {Method::Parameters, Method::NamedParameters, Method::NamedMembers, Method::NamedModules},
    {Method::Buffers, Method::NamedBuffers, Method::NamedMembers, Method::NamedModules},
    {Method::Modules, Method::Count, Method::Count, Method::NamedModules},
};

// The method at `level` of a walk of `kind`, Method::Count where there is none.
constexpr Method chain_method(Kind kind, Dispatch level) {
  return level == Dispatch::Children
      ? Method::Count
      : kChain[static_cast<std::size_t>(kind)][static_cast<std::size_t>(level)];
}

constexpr Dispatch next_level(Dispatch level) {
  return static_cast<Dispatch>(static_cast<int>(level) + 1);
}

}  // namespace pyparams
