// Minimal .npy reader/writer (NumPy format 1.0-3.0, little-endian float32/float64, C order),
// header-only. Enough for the example program and tests; not a general NumPy I/O library.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace starpose {
namespace npy {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;   // always float32 (float64 files are converted)
};

inline Array load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[6];
  f.read(magic, 6);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not a .npy file");
  uint8_t ver[2];
  f.read(reinterpret_cast<char*>(ver), 2);
  uint32_t hlen = 0;
  if (ver[0] == 1) {
    uint8_t b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else if (ver[0] == 2 || ver[0] == 3) {
    uint8_t b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw std::runtime_error(path + ": unsupported .npy version " + std::to_string(ver[0]));
  }
  std::string header(hlen, '\0');
  f.read(&header[0], hlen);
  if (!f) throw std::runtime_error(path + ": truncated header");
  auto field = [&](const std::string& key) {
    size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) throw std::runtime_error(path + ": header lacks '" + key + "'");
    return header.find(':', k) + 1;
  };
  size_t d = header.find('\'', field("descr")) + 1;
  const std::string descr = header.substr(d, header.find('\'', d) - d);
  if (descr != "<f4" && descr != "<f8")
    throw std::runtime_error(path + ": dtype " + descr + " not supported (need little-endian float32 or float64)");
  if (header.find("True", field("fortran_order")) < header.find(',', field("fortran_order")))
    throw std::runtime_error(path + ": Fortran-order arrays are not supported");
  size_t s = header.find('(', field("shape")) + 1, e = header.find(')', s);
  Array a;
  int64_t count = 1;
  std::string dims = header.substr(s, e - s);
  size_t pos = 0;
  while (pos < dims.size()) {
    size_t comma = dims.find(',', pos);
    std::string tok = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (tok.find_first_of("0123456789") != std::string::npos) {
      a.shape.push_back(std::stoll(tok));
      count *= a.shape.back();
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  a.data.resize(static_cast<size_t>(count));
  if (descr == "<f4") {
    f.read(reinterpret_cast<char*>(a.data.data()), static_cast<std::streamsize>(count * 4));
  } else {
    std::vector<double> tmp(static_cast<size_t>(count));
    f.read(reinterpret_cast<char*>(tmp.data()), static_cast<std::streamsize>(count * 8));
    for (size_t i = 0; i < tmp.size(); ++i) a.data[i] = static_cast<float>(tmp[i]);
  }
  if (!f) throw std::runtime_error(path + ": truncated data");
  return a;
}

inline void save(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string dims;
  int64_t count = 1;
  for (auto d : shape) {
    dims += std::to_string(d) + ",";
    count *= d;
  }
  if (shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t hlen = static_cast<uint16_t>(header.size());
  const char hb[2] = {static_cast<char>(hlen & 0xFF), static_cast<char>(hlen >> 8)};
  f.write(hb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * 4));
  if (!f) throw std::runtime_error("failed writing " + path);
}

}  // namespace npy
}  // namespace starpose
