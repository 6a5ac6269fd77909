#include "corral/cpu_set.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <stdexcept>

#include "text_file.hpp"

namespace corral {

namespace {

constexpr int bits_per_word = 64;

[[noreturn]] void bad_list(std::string_view list, std::string_view why) {
  std::string message = "invalid cpu list \"";
  message.append(list.substr(0, 200));
  message.append("\": ");
  message.append(why);
  throw std::invalid_argument(message);
}

// A whole decimal id in [0, max_cpu_id]: no sign, no spaces inside.
int parse_id(std::string_view list, std::string_view text) {
  text = detail::trim(text);
  if (text.empty()) bad_list(list, "empty item");
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error == std::errc::result_out_of_range) bad_list(list, "cpu id out of range");
  if (error != std::errc{} || end != text.data() + text.size())
    bad_list(list, "not a cpu id: \"" + std::string(text) + "\"");
  if (value < 0 || value > cpu_set::max_cpu_id)
    bad_list(list, "cpu id out of range: " + std::string(text));
  return value;
}

}  // namespace

cpu_set cpu_set::parse(std::string_view list) {
  cpu_set result;
  const std::string_view body = detail::trim(list);
  if (body.empty()) return result;
  std::size_t start = 0;
  while (start <= body.size()) {
    const std::size_t comma = std::min(body.find(',', start), body.size());
    const std::string_view item = body.substr(start, comma - start);
    const std::size_t dash = item.find('-');
    if (dash == std::string_view::npos) {
      result.add(parse_id(list, item));
    } else {
      const int first = parse_id(list, item.substr(0, dash));
      const int last = parse_id(list, item.substr(dash + 1));
      if (last < first)
        bad_list(list, "reversed range \"" + std::string(detail::trim(item)) + "\"");
      result = result | range(first, last);
    }
    start = comma + 1;
  }
  return result;
}

cpu_set cpu_set::range(int first, int last) {
  cpu_set result;
  if (last < first) return result;
  result.add(last);  // sizes the words once (and checks the bound)
  for (int id = first; id < last; ++id) result.add(id);
  return result;
}

cpu_set cpu_set::of(std::initializer_list<int> ids) {
  cpu_set result;
  for (const int id : ids) result.add(id);
  return result;
}

void cpu_set::add(int id) {
  if (id < 0 || id > max_cpu_id)
    throw std::out_of_range("cpu id out of range: " + std::to_string(id));
  const auto word = static_cast<std::size_t>(id / bits_per_word);
  if (words_.size() <= word) words_.resize(word + 1, 0);
  words_[word] |= std::uint64_t{1} << (id % bits_per_word);
}

void cpu_set::remove(int id) {
  if (!contains(id)) return;
  words_[static_cast<std::size_t>(id / bits_per_word)] &=
      ~(std::uint64_t{1} << (id % bits_per_word));
  trim();
}

bool cpu_set::contains(int id) const {
  if (id < 0) return false;
  const auto word = static_cast<std::size_t>(id / bits_per_word);
  return word < words_.size() && ((words_[word] >> (id % bits_per_word)) & 1U) != 0;
}

std::size_t cpu_set::count() const {
  std::size_t total = 0;
  for (const std::uint64_t w : words_) total += static_cast<std::size_t>(std::popcount(w));
  return total;
}

std::vector<int> cpu_set::ids() const {
  std::vector<int> result;
  result.reserve(count());
  for (std::size_t word = 0; word < words_.size(); ++word) {
    std::uint64_t bits = words_[word];
    while (bits != 0) {
      result.push_back(static_cast<int>(word) * bits_per_word + std::countr_zero(bits));
      bits &= bits - 1;
    }
  }
  return result;
}

int cpu_set::first() const {
  for (std::size_t word = 0; word < words_.size(); ++word) {
    if (words_[word] != 0)
      return static_cast<int>(word) * bits_per_word + std::countr_zero(words_[word]);
  }
  return -1;
}

cpu_set cpu_set::operator&(const cpu_set& other) const {
  cpu_set result;
  result.words_.resize(std::min(words_.size(), other.words_.size()));
  for (std::size_t i = 0; i < result.words_.size(); ++i)
    result.words_[i] = words_[i] & other.words_[i];
  result.trim();
  return result;
}

cpu_set cpu_set::operator|(const cpu_set& other) const {
  cpu_set result = words_.size() >= other.words_.size() ? *this : other;
  const cpu_set& smaller = words_.size() >= other.words_.size() ? other : *this;
  for (std::size_t i = 0; i < smaller.words_.size(); ++i) result.words_[i] |= smaller.words_[i];
  return result;
}

bool cpu_set::is_subset_of(const cpu_set& other) const {
  return (*this & other) == *this;
}

bool operator==(const cpu_set& a, const cpu_set& b) {
  return a.words_ == b.words_;
}

std::string cpu_set::to_string() const {
  std::string text;
  const std::vector<int> list = ids();
  for (std::size_t i = 0; i < list.size();) {
    std::size_t j = i;
    while (j + 1 < list.size() && list[j + 1] == list[j] + 1) ++j;
    if (!text.empty()) text += ',';
    text += std::to_string(list[i]);
    if (j > i) text += '-' + std::to_string(list[j]);
    i = j + 1;
  }
  return text;
}

void cpu_set::trim() {
  while (!words_.empty() && words_.back() == 0) words_.pop_back();
}

}  // namespace corral
