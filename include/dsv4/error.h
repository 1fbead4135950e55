// Errors: every user-facing failure is a dsv4::Error whose message names what was
// wrong (file, tensor, field) and what was expected.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace dsv4 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace dsv4

// DSV4_CHECK(cond, "fmt", args...): throws dsv4::Error with the formatted message.
#define DSV4_CHECK(cond, ...)        \
  do {                               \
    if (!(cond)) ::dsv4::fail(__VA_ARGS__); \
  } while (0)
