#pragma once

// float4 and float8 written as PostgreSQL 12 and later write them (float4out, float8out with
// extra_float_digits > 0, the default of every client since): the shortest digits that read
// back as the same value, in fixed notation for moderate exponents and as "1.5e+20" otherwise.
// A value decoded from a binary send format is so written exactly as PostgreSQL would have
// written its text.
//
// Thread-safety: plain functions of their arguments; any thread may call any of them.

#include <string>

namespace pgflow {

// Appends float4out's text of `f`: "1.5", "0.0001", "1e-05", "1.234567e+06", "-0", "NaN",
// "Infinity", "-Infinity". Fixed notation for decimal exponents in [-4, 6).
void AppendFloat4Text(float f, std::string* out);

// Appends float8out's text of `d`, as AppendFloat4Text does; fixed notation for decimal
// exponents in [-4, 15): "100000000000000", "1e+15", "2.2250738585072014e-308".
void AppendFloat8Text(double d, std::string* out);

}  // namespace pgflow
