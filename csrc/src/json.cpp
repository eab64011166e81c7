#include "json.hpp"

#include <cmath>
#include <cstdlib>

#include "starpose/runner.hpp"

namespace starpose {
namespace json {
namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  Value document() {
    Value v = value();
    skip_ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;
  int depth_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error("invalid JSON: " + what + " at byte " + std::to_string(i_));
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool consume(const char* lit) {
    size_t n = 0;
    while (lit[n]) ++n;
    if (s_.compare(i_, n, lit) == 0) {
      i_ += n;
      return true;
    }
    return false;
  }
  Value value() {
    if (++depth_ > 64) fail("nesting too deep");
    skip_ws();
    if (i_ >= s_.size()) fail("unexpected end of input");
    Value v;
    char c = s_[i_];
    if (c == '{') {
      v.type = Value::Type::Object;
      ++i_;
      skip_ws();
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
      } else {
        for (;;) {
          skip_ws();
          if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string key");
          std::string key = string();
          skip_ws();
          if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':'");
          ++i_;
          v.object.emplace_back(std::move(key), value());
          skip_ws();
          if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
          if (i_ < s_.size() && s_[i_] == '}') { ++i_; break; }
          fail("expected ',' or '}'");
        }
      }
    } else if (c == '[') {
      v.type = Value::Type::Array;
      ++i_;
      skip_ws();
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
      } else {
        for (;;) {
          v.array.push_back(value());
          skip_ws();
          if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
          if (i_ < s_.size() && s_[i_] == ']') { ++i_; break; }
          fail("expected ',' or ']'");
        }
      }
    } else if (c == '"') {
      v.type = Value::Type::String;
      v.string = string();
    } else if (consume("true")) {
      v.type = Value::Type::Bool;
      v.boolean = true;
    } else if (consume("false")) {
      v.type = Value::Type::Bool;
    } else if (consume("null")) {
      v.type = Value::Type::Null;
    } else if (consume("NaN")) {   // Python's json writes these for non-finite floats
      v.type = Value::Type::Number;
      v.number = std::nan("");
    } else if (consume("Infinity")) {
      v.type = Value::Type::Number;
      v.number = HUGE_VAL;
    } else if (consume("-Infinity")) {
      v.type = Value::Type::Number;
      v.number = -HUGE_VAL;
    } else {
      const char* begin = s_.c_str() + i_;
      char* end = nullptr;
      v.number = std::strtod(begin, &end);
      if (end == begin) fail(std::string("unexpected character '") + c + "'");
      v.type = Value::Type::Number;
      i_ += static_cast<size_t>(end - begin);
    }
    --depth_;
    return v;
  }
  std::string string() {
    ++i_;  // opening quote
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (i_ + 4 > s_.size()) fail("short \\u escape");
          unsigned cp = static_cast<unsigned>(std::strtoul(s_.substr(i_, 4).c_str(), nullptr, 16));
          i_ += 4;
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: fail("bad escape");
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;  // closing quote
    return out;
  }
};

[[noreturn]] void type_error(const char* want) { throw Error(std::string("expected ") + want); }

}  // namespace

bool Value::has(const std::string& key) const {
  if (type != Type::Object) return false;
  for (const auto& kv : object)
    if (kv.first == key) return true;
  return false;
}

const Value& Value::at(const std::string& key) const {
  if (type != Type::Object) type_error(("an object holding '" + key + "'").c_str());
  for (const auto& kv : object)
    if (kv.first == key) return kv.second;
  throw Error("missing key '" + key + "'");
}

const Value& Value::at(size_t i) const {
  if (type != Type::Array || i >= array.size()) type_error("a longer array");
  return array[i];
}

size_t Value::size() const {
  if (type != Type::Array) type_error("an array");
  return array.size();
}

double Value::as_number() const {
  if (type != Type::Number) type_error("a number");
  return number;
}

int Value::as_int() const {
  double d = as_number();
  if (d != std::floor(d)) type_error("an integer");
  return static_cast<int>(d);
}

bool Value::as_bool() const {
  if (type != Type::Bool) type_error("a boolean");
  return boolean;
}

const std::string& Value::as_string() const {
  if (type != Type::String) type_error("a string");
  return string;
}

std::vector<float> Value::as_floats() const {
  std::vector<float> out;
  out.reserve(size());
  for (const auto& v : array) out.push_back(static_cast<float>(v.as_number()));
  return out;
}

std::vector<int> Value::as_ints() const {
  std::vector<int> out;
  out.reserve(size());
  for (const auto& v : array) out.push_back(v.as_int());
  return out;
}

Value parse(const std::string& text) { return Parser(text).document(); }

}  // namespace json
}  // namespace starpose
