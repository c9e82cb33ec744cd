// Byte sizes as operators and Kubernetes write them: "10Gi", "500M", "4096".
// Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace localvol {

// Parses a non-negative byte count. Accepts a plain integer, or an integer
// followed by a decimal suffix (k/K, M, G, T, P: powers of 1000) or a binary one
// (Ki, Mi, Gi, Ti, Pi: powers of 1024); an optional trailing "B" is allowed.
// Fails with EINVAL (malformed) or ERANGE (overflows 64 bits), naming the input.
Result<uint64_t> ParseSize(std::string_view text);

// Formats bytes for people: "10Gi", "1.5Gi", "512".
std::string FormatSize(uint64_t bytes);

// Formats bytes exactly, in the largest binary unit that divides them:
// "100Mi", "1536Ki", "1000". ParseSize() reads it back to the same value.
std::string FormatExactSize(uint64_t bytes);

}  // namespace localvol
