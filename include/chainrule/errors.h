#pragma once
// Typed exceptions, so callers can catch what they mean. Every message names the operation and
// the offending shapes, dtypes, values or file offsets.
#include <stdexcept>
#include <string>

namespace chainrule {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ShapeError : Error {  // incompatible shapes, bad axes
  using Error::Error;
};
struct DTypeError : Error {  // wrong or mismatched dtypes
  using Error::Error;
};
struct ValueError : Error {  // bad argument values (out-of-range index, negative size, ...)
  using Error::Error;
};
struct AutodiffError : Error {  // misuse of reverse/forward mode and the transforms
  using Error::Error;
};
struct IOError : Error {  // unreadable, malformed or unwritable files
  using Error::Error;
};
struct DistributedError : Error {  // a failed or timed-out collective, MPI compiled out, a lost rank
  using Error::Error;
};

}  // namespace chainrule
