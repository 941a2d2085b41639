// Whether torch's memo sets would find an object by its identity alone.
//
// torch's walks remove duplicates with Python sets, which hash what they are
// asked about: `self not in memo` (then `memo.add(self)`) for each module
// named_modules enters, `v in memo` (then `memo.add(v)`) for each member
// `_named_members` reads, with remove_duplicate=False too. Where the hash is
// the object's identity (object's pointer hash, which nn.Module keeps, and
// torch.Tensor.__hash__, which returns id(self)), distinct live objects hash
// apart, no `==` runs, and the walk's identity sets answer as the memo would.
// Any other hash (a class defining __hash__, or __eq__ alone, which makes it
// unhashable) is code the walk runs where torch runs it, on a real set.
#pragma once

#include <Python.h>

namespace pyparams {

// Whether torch's named_modules memo finds `module` by identity alone: its
// class keeps object's hash. (An exact compare of the slot CPython keeps in
// step with the class's `__hash__`, whatever assigns it.)
inline bool module_hash_is_identity(PyObject* module) {
  return Py_TYPE(module)->tp_hash == PyBaseObject_Type.tp_hash;
}

namespace detail {
struct ProvenTensorHash {
  PyTypeObject* type = nullptr;
  unsigned int version = 0;  // the class's version tag when proven (never 0)
};
// The class proven last (parameters, mostly), and the one before (buffers' tensors).
extern ProvenTensorHash g_last_tensor_hash;
extern ProvenTensorHash g_other_tensor_hash;
extern PyObject* g_tensor_hash;       // torch.Tensor.__hash__, a function
extern PyObject* g_tensor_hash_code;  // its __code__ at import
bool prove_tensor_hash(PyTypeObject* type);
}  // namespace detail

// Whether `_named_members`' memo finds `value` by identity alone: a tensor
// whose class resolves __hash__ to torch.Tensor.__hash__, with the code torch
// gave it. Proven once per class and version tag (a class or base changed
// since gets a new tag), so the common case is a few compares.
inline bool member_hash_is_identity(PyObject* value) {
  PyTypeObject* type = Py_TYPE(value);
  const detail::ProvenTensorHash& last = detail::g_last_tensor_hash;
  if (type == last.type && type->tp_version_tag == last.version) [[likely]] {
    return PyFunction_GET_CODE(detail::g_tensor_hash) == detail::g_tensor_hash_code;
  }
  return detail::prove_tensor_hash(type);
}

// member_hash_is_identity over a stretch in which no code runs (a replay's
// step, an eager replay's run): no class, version tag or code object can
// change there, so the class proven last is taken at one compare.
class MemberHashChecks {
 public:
  bool operator()(PyObject* value) {
    PyTypeObject* type = Py_TYPE(value);
    if (type == proven_) [[likely]] {
      return true;
    }
    if (!member_hash_is_identity(value)) {
      return false;
    }
    proven_ = type;
    return true;
  }
  // Code may run from here on.
  void forget() { proven_ = nullptr; }

 private:
  PyTypeObject* proven_ = nullptr;
};

// Finds torch.Tensor.__hash__. False with an error set.
bool init_memo_hash();

}  // namespace pyparams
