// A set of CPU ids, and the kernel's "cpu list" text format ("0-3,8,10-11") that
// sysfs, cgroup cpuset files and taskset use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace corral {

class cpu_set {
 public:
  // Larger than any id Linux can give (NR_CPUS is at most 8192): a bound that turns
  // garbage like "0-4000000000" into an error instead of a huge allocation.
  static constexpr int max_cpu_id = 65535;

  cpu_set() = default;

  // Parses a kernel cpu list. Whitespace around items and a trailing newline are
  // accepted; "" gives the empty set. Anything else malformed (a reversed range,
  // a negative or too large id, stray characters) throws std::invalid_argument
  // whose message quotes the text.
  static cpu_set parse(std::string_view list);
  static cpu_set range(int first, int last);  // [first, last], both inclusive
  static cpu_set of(std::initializer_list<int> ids);

  // Throws std::out_of_range when id is outside [0, max_cpu_id].
  void add(int id);
  void remove(int id);
  [[nodiscard]] bool contains(int id) const;
  [[nodiscard]] std::size_t count() const;
  [[nodiscard]] bool empty() const { return count() == 0; }
  [[nodiscard]] std::vector<int> ids() const;  // ascending
  [[nodiscard]] int first() const;             // -1 when empty

  [[nodiscard]] cpu_set operator&(const cpu_set& other) const;  // intersection
  [[nodiscard]] cpu_set operator|(const cpu_set& other) const;  // union
  [[nodiscard]] bool is_subset_of(const cpu_set& other) const;
  friend bool operator==(const cpu_set& a, const cpu_set& b);

  // The shortest cpu list: "0-3,8"; "" for the empty set.
  [[nodiscard]] std::string to_string() const;

 private:
  void trim();  // drops trailing zero words so that equal sets compare equal
  std::vector<std::uint64_t> words_;
};

}  // namespace corral
