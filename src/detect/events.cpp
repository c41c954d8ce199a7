#include "detect/events.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>

#include "core/error.h"

namespace bulwark::detect {
namespace {

using nlohmann::json;

// Null reads as NaN because to_json writes NaN (e.g. an accuracy with no feedback) as null.
double number_field(const json& j, const char* key, bool required, double fallback) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) throw data_format(std::string("event field '") + key + "' is missing");
    return fallback;
  }
  if (it->is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (!it->is_number()) throw data_format(std::string("event field '") + key + "' must be a number");
  return it->get<double>();
}

std::string string_field(const json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) throw data_format(std::string("event field '") + key + "' is missing");
    return "";
  }
  if (!it->is_string()) throw data_format(std::string("event field '") + key + "' must be a string");
  return it->get<std::string>();
}

json num_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

}  // namespace

std::string iso8601_utc(double time_s) {
  // ±1e14 s keeps the millisecond count inside int64 and the year inside what gmtime handles.
  if (!std::isfinite(time_s) || std::fabs(time_s) > 1e14) return "";
  const auto total_ms = static_cast<int64_t>(std::llround(time_s * 1000.0));
  int64_t secs = total_ms / 1000, ms = total_ms % 1000;
  if (ms < 0) ms += 1000, secs -= 1;  // floor division for times before 1970
  const auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return "";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

json Event::to_json() const {
  return json{{"time", iso8601_utc(time_s)},
              {"time_s", num_or_null(time_s)},
              {"kind", kind},
              {"detector", detector},
              {"model", model},
              {"version", version},
              {"subject", subject},
              {"statistic", num_or_null(statistic)},
              {"threshold", num_or_null(threshold)},
              {"window_s", num_or_null(window_s)},
              {"details", details}};
}

Event Event::from_json(const json& j) {
  if (!j.is_object()) throw data_format("event must be a JSON object");
  Event e;
  e.time_s = number_field(j, "time_s", true, 0);
  if (!std::isfinite(e.time_s)) throw data_format("event field 'time_s' must be a finite number");
  e.kind = string_field(j, "kind", true);
  if (e.kind.empty()) throw data_format("event field 'kind' must not be empty");
  e.detector = string_field(j, "detector", false);
  e.model = string_field(j, "model", false);
  e.version = string_field(j, "version", false);
  e.subject = string_field(j, "subject", false);
  e.statistic = number_field(j, "statistic", false, 0);
  e.threshold = number_field(j, "threshold", false, 0);
  e.window_s = number_field(j, "window_s", false, 0);
  auto it = j.find("details");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw data_format("event field 'details' must be an object");
    e.details = *it;
  }
  return e;
}

EventBus::EventBus(std::string log_path, size_t recent_capacity)
    : log_path_(std::move(log_path)), capacity_(recent_capacity) {
  if (recent_capacity > 1000000) {
    throw invalid_argument("events.recent_capacity must be at most 1000000, got " + std::to_string(recent_capacity));
  }
  if (!log_path_.empty()) {
    log_.open(log_path_, std::ios::out | std::ios::app);
    if (!log_) throw io_error("cannot open event log " + log_path_ + " for appending");
  }
}

namespace {
// The subscribers this thread is inside now (a subscriber may publish, or remove itself).
thread_local std::vector<const void*> t_inside;
}  // namespace

int EventBus::subscribe(Subscriber subscriber) {
  std::lock_guard<std::mutex> lock(mu_);
  const int id = next_id_++;
  auto entry = std::make_shared<Entry>();
  entry->call = std::move(subscriber);
  subscribers_.emplace(id, std::move(entry));
  return id;
}

void EventBus::unsubscribe(int id) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto it = subscribers_.find(id);
  if (it == subscribers_.end()) return;
  const auto entry = it->second;
  subscribers_.erase(it);
  entry->removed = true;
  const int own = static_cast<int>(std::count(t_inside.begin(), t_inside.end(), entry.get()));
  idle_.wait(lock, [&] { return entry->in_flight <= own; });
}

void EventBus::publish(const Event& event) {
  std::vector<std::shared_ptr<Entry>> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (log_.is_open()) {
      // Written under the lock so lines from different threads never interleave.
      log_ << event.to_json().dump() << '\n';
      log_.flush();
      if (!log_) {
        ++write_errors_;
        log_.clear();
      }
    }
    if (capacity_ > 0) {
      if (ring_.size() < capacity_) {
        ring_.push_back(event);
      } else {
        ring_[head_] = event;
        head_ = (head_ + 1) % capacity_;
      }
    }
    ++published_;
    targets.reserve(subscribers_.size());
    for (const auto& [id, sub] : subscribers_) targets.push_back(sub);
  }
  for (const auto& sub : targets) {
    {
      // Counted in flight only from here, right before the call, and only if still subscribed:
      // unsubscribe() then waits for exactly the calls that will run (and this thread's own).
      std::lock_guard<std::mutex> lock(mu_);
      if (sub->removed) continue;
      ++sub->in_flight;
    }
    t_inside.push_back(sub.get());
    try {
      sub->call(event);
    } catch (...) {
      ++subscriber_errors_;
    }
    t_inside.pop_back();
    std::lock_guard<std::mutex> lock(mu_);
    --sub->in_flight;
    idle_.notify_all();
  }
}

std::vector<Event> EventBus::recent(size_t n) const {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t take = std::min(n, ring_.size());
  std::vector<Event> out;
  out.reserve(take);
  // Oldest held event sits at head_ once the ring is full, at 0 before.
  const size_t oldest = ring_.size() < capacity_ ? 0 : head_;
  for (size_t i = ring_.size() - take; i < ring_.size(); ++i) out.push_back(ring_[(oldest + i) % ring_.size()]);
  return out;
}

uint64_t EventBus::published() const {
  std::lock_guard<std::mutex> lock(mu_);
  return published_;
}

uint64_t EventBus::write_errors() const {
  std::lock_guard<std::mutex> lock(mu_);
  return write_errors_;
}

uint64_t EventBus::subscriber_errors() const { return subscriber_errors_.load(); }

}  // namespace bulwark::detect
