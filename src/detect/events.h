// detect/events.h — what the detectors tell the rest of Bulwark. An Event is the stable record
// of one alarm (or its clearing, or a per-client action); the EventBus fans each one out to
// in-process subscribers (the closed-loop controller, metrics), an optional JSON-lines audit file,
// and a bounded ring that status endpoints read. The JSON shape is an API: add fields, never
// rename or remove them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bulwark::detect {

struct Event {
  double time_s = 0;  // unix seconds, or simulated seconds in a replay
  std::string kind;   // "alarm" | "alarm.cleared" | "client.flagged" | "client.blocked" ...
  // The statistic behind it: "detector_rate" | "confidence" | "class_mix" | "accuracy" | "stateful".
  std::string detector;
  std::string model, version;
  std::string subject;  // client id for per-client events, else empty
  double statistic = 0, threshold = 0;
  double window_s = 0;
  nlohmann::json details = nlohmann::json::object();

  // {"time": "2026-11-21T16:20:00.123Z", "time_s": ..., "kind": ..., ...}; "time" is ISO-8601 UTC,
  // derived from time_s for people and log tools. Non-finite numbers become null (read back as NaN).
  nlohmann::json to_json() const;
  // Requires "time_s" (finite number) and "kind" (non-empty string); the other fields are optional
  // but must have the right type (null reads as NaN for numbers). Throws data_format naming the field.
  static Event from_json(const nlohmann::json& j);
};

// "1970-01-01T00:00:00.000Z" for 0; millisecond precision. Empty for non-finite input.
std::string iso8601_utc(double time_s);

// Thread-safe: publish(), subscribe(), unsubscribe(), recent() may be called from any thread.
// Subscribers run on the publishing thread, after the bus lock is released (so a subscriber may
// publish or read recent() itself), and must be quick: the publisher is usually a serving thread.
// Events from one publishing thread reach each subscriber in order; across threads only the file
// and the ring share one order. unsubscribe() returns only once no thread is inside that
// subscriber (other than the caller's own thread, when a subscriber removes itself), and it is
// never called again: a subscriber may capture an object its owner destroys right after
// unsubscribing. A subscriber that throws is counted in subscriber_errors() and skipped,
// so one faulty listener cannot break serving or starve the others.
class EventBus {
 public:
  // log_path: JSON-lines file opened for append now (io_error naming the path if it cannot be);
  // empty for none. recent_capacity: events kept for recent(), at most 1,000,000.
  explicit EventBus(std::string log_path = "", size_t recent_capacity = 256);

  using Subscriber = std::function<void(const Event&)>;
  int subscribe(Subscriber subscriber);
  void unsubscribe(int id);  // unknown ids are ignored; waits for calls in flight (above)

  // Appends one flushed line to the file (a failed write is counted in write_errors(), not thrown:
  // losing the audit line must not fail the request that caused it), keeps the event in the ring,
  // then calls the subscribers.
  void publish(const Event& event);

  // The newest min(n, held) events, oldest first.
  std::vector<Event> recent(size_t n) const;
  uint64_t published() const;
  uint64_t write_errors() const;
  uint64_t subscriber_errors() const;
  const std::string& log_path() const { return log_path_; }

 private:
  const std::string log_path_;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::ofstream log_;
  struct Entry {
    Subscriber call;
    int in_flight = 0;     // calls running now, on any thread (under mu_)
    bool removed = false;  // set by unsubscribe (under mu_): not entered again
  };
  std::map<int, std::shared_ptr<Entry>> subscribers_;
  std::condition_variable idle_;  // an entry's in_flight fell
  int next_id_ = 1;
  std::vector<Event> ring_;  // grows to capacity_, then overwritten at head_
  size_t head_ = 0;          // next slot to overwrite once full
  uint64_t published_ = 0, write_errors_ = 0;
  std::atomic<uint64_t> subscriber_errors_{0};  // bumped outside the lock
};

}  // namespace bulwark::detect
