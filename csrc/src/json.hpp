// Minimal JSON reader for runner.json (export/onnx.py): objects, arrays, numbers, strings, bools,
// null. Enough for a file we write ourselves; not a general-purpose parser (no \u surrogate
// pairs beyond the BMP, no streaming). Errors throw starpose::Error (with the byte offset for
// syntax errors); the caller adds the file name.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace starpose {
namespace json {

struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;

  bool has(const std::string& key) const;
  const Value& at(const std::string& key) const;   // throws when missing or not an object
  const Value& at(size_t i) const;                 // throws when out of range or not an array
  size_t size() const;                             // array length
  double as_number() const;
  int as_int() const;
  bool as_bool() const;
  const std::string& as_string() const;
  std::vector<float> as_floats() const;            // flat array of numbers
  std::vector<int> as_ints() const;
};

Value parse(const std::string& text);

}  // namespace json
}  // namespace starpose
