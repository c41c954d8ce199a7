#include "traffic/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/progress.h"

namespace bulwark::traffic {
namespace {

using Clock = std::chrono::steady_clock;

// One scheduled request.
struct Slot {
  size_t phase = 0;
  int64_t seq = 0;     // over the whole run: picks the image
  int64_t second = 0;  // wall-clock second (from the start) it belongs to
  Clock::time_point due, phase_end;
  bool attacked = false;
};

// The run. Workers claim slots in schedule order under mu_, which also guards every aggregate;
// the calling thread writes the lines.
class Run {
 public:
  Run(Workload& w, const TrafficOptions& o, const RequestObserver& observe)
      : w_(w),
        o_(o),
        observe_(observe),
        row_elems_(w.x[0].numel()),
        late_after_ms_(std::max(10.0, 1000.0 / o.rate_per_s)) {
    const auto* y = w.y.data_ptr<int64_t>();
    labels_.assign(y, y + w.y.size(0));
    for (int64_t d : w.x.sizes().slice(1)) shape_.push_back(d);
    shape_.insert(shape_.begin(), 1);
    int64_t start_s = 0;
    for (const auto& p : o.phases) {
      phase_start_s_.push_back(start_s);
      phase_slots_.push_back(static_cast<int64_t>(std::ceil(static_cast<double>(p.seconds) * o.rate_per_s - 1e-9)));
      start_s += p.seconds;
      PhaseSummary s;
      s.kind = to_string(p.kind);
      s.eps_linf = p.eps_linf;
      s.attacker_model = p.attacker_model;
      s.seconds = p.seconds;
      s.scheduled = phase_slots_.back();
      summaries_.push_back(std::move(s));
    }
    total_s_ = start_s;
  }

  TrafficReport execute();

 private:
  bool claim(Slot* s);
  void work(int index);
  void send(V2Client& client, const Slot& s);
  // Fills the record and outcome of one slot; may throw (send() turns that into a failure).
  void attempt(V2Client& client, const Slot& s, RequestRecord& rec, Outcome& out);
  void complete(const Slot& s, const Outcome& out, const RequestRecord& rec);
  size_t phase_of_second(int64_t t) const;
  std::string progress_status(size_t phase, const SecondStats& s) const;

  Workload& w_;
  const TrafficOptions& o_;
  const RequestObserver& observe_;
  const int64_t row_elems_;
  const double late_after_ms_;
  std::vector<int64_t> labels_;
  std::vector<int64_t> shape_;  // [1, C, H, W]
  std::vector<int64_t> phase_start_s_, phase_slots_;
  int64_t total_s_ = 0;
  Clock::time_point t0_;

  std::mutex mu_;
  std::condition_variable changed_;
  size_t next_phase_ = 0;
  int64_t next_j_ = 0, next_seq_ = 0;
  int64_t frontier_s_ = -1;  // every second before this one has all its slots claimed
  bool claims_done_ = false;
  int64_t workers_left_ = 0;
  std::map<int64_t, SecondStats> seconds_;  // open seconds only
  std::vector<PhaseSummary> summaries_;
  std::mutex observe_mu_;
};

bool Run::claim(Slot* s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (o_.stop && o_.stop->load()) {
    claims_done_ = true;
    changed_.notify_all();
    return false;
  }
  while (next_phase_ < phase_slots_.size() && next_j_ >= phase_slots_[next_phase_]) {
    ++next_phase_;
    next_j_ = 0;
  }
  if (next_phase_ == phase_slots_.size()) {
    claims_done_ = true;
    changed_.notify_all();
    return false;
  }
  const auto& p = o_.phases[next_phase_];
  const int64_t j = next_j_++;
  s->phase = next_phase_;
  s->seq = next_seq_++;
  const auto local_s =
      std::min<int64_t>(p.seconds - 1, static_cast<int64_t>(std::floor(static_cast<double>(j) / o_.rate_per_s)));
  s->second = phase_start_s_[next_phase_] + local_s;
  const auto offset_ns = std::llround(static_cast<double>(j) * 1e9 / o_.rate_per_s);
  s->due = t0_ + std::chrono::seconds(phase_start_s_[next_phase_]) + std::chrono::nanoseconds(offset_ns);
  s->phase_end = t0_ + std::chrono::seconds(phase_start_s_[next_phase_] + p.seconds);
  // Spread attacked requests evenly: exactly floor(share x requests) of the first requests.
  const double share = o_.attacked_share;
  s->attacked = p.attacked() && std::floor((j + 1) * share) > std::floor(j * share);
  ++seconds_[s->second].claimed;
  if (s->second > frontier_s_) {
    frontier_s_ = s->second;
    changed_.notify_all();
  }
  return true;
}

void Run::send(V2Client& client, const Slot& s) {
  RequestRecord rec;
  Outcome out;
  out.attacked = s.attacked;
  try {
    attempt(client, s, rec, out);
  } catch (const std::exception& e) {
    // Nothing may escape a worker: a lost slot would hold its second's line back for ever.
    out.ok = rec.ok = false;
    rec.error = std::string("internal: ") + e.what();
  }
  complete(s, out, rec);
}

void Run::attempt(V2Client& client, const Slot& s, RequestRecord& rec, Outcome& out) {
  const auto& plan = w_.plans[s.phase];
  rec.phase = s.phase;
  rec.attacked = s.attacked;
  rec.image = w_.order[static_cast<size_t>(s.seq % static_cast<int64_t>(w_.order.size()))];
  const float* values = nullptr;
  if (!s.attacked) {
    values = w_.x.data_ptr<float>() + rec.image * row_elems_;
    if (observe_) rec.input = w_.x[rec.image];
  } else if (plan.phase.transfer()) {
    values = plan.adversarial.data_ptr<float>() + rec.image * row_elems_;
    if (observe_) rec.input = plan.adversarial[rec.image];
  } else if (plan.square && plan.square->next(&rec.image, &rec.input)) {
    values = rec.input.data_ptr<float>();  // the pool may replace its entry; rec.input keeps this one alive
  }
  rec.label = labels_[static_cast<size_t>(rec.image)];
  if (Clock::now() >= s.phase_end) {
    rec.error = "dropped: its phase ended before a worker was free";  // backlog
    return;
  }
  std::this_thread::sleep_until(s.due);
  out.sent = rec.sent = true;
  out.lag_ms = std::chrono::duration<double, std::milli>(Clock::now() - s.due).count();
  InferResult r;
  if (values) {
    r = client.infer(values, shape_);
  } else {
    r.error = "square: no adversarial crafted yet";
  }
  out.ok = rec.ok = r.ok && r.rows == 1;
  rec.model_version = r.model_version;
  if (!out.ok) {
    rec.error = r.ok ? "answer has " + std::to_string(r.rows) + " rows, not 1" : r.error;
    return;
  }
  rec.predicted = r.predicted[0];
  out.correct = rec.predicted == rec.label;
  out.flagged = r.flagged;
  out.latency_ms = r.latency_ms;
  out.model_version = r.model_version;
  if (o_.feedback) {
    const auto err = r.id.empty() ? std::string("the answer carried no id") : client.feedback(r.id, {rec.label});
    out.feedback_failed = !err.empty();
    if (!err.empty()) rec.error = "feedback: " + err;
  }
}

void Run::complete(const Slot& s, const Outcome& out, const RequestRecord& rec) {
  if (observe_) {
    // Before the second can close, so whoever reads the lines after the run has seen every record.
    std::lock_guard<std::mutex> lock(observe_mu_);
    observe_(rec);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& sec = seconds_[s.second];
  auto& phase = summaries_[s.phase];
  ++sec.completed;
  sec.counters.add(out, late_after_ms_);
  phase.counters.add(out, late_after_ms_);
  if (out.sent) phase.max_lag_ms = std::max(phase.max_lag_ms, out.lag_ms);
  if (out.ok) {
    sec.latencies.add(out.latency_ms);
    phase.latencies.add(out.latency_ms);
    sec.model_version = out.model_version;
    phase.versions.insert(out.model_version);
    if (out.feedback_failed && phase.first_feedback_error.empty()) phase.first_feedback_error = rec.error;
  } else if (out.sent && phase.first_error.empty()) {
    phase.first_error = rec.error;
  }
  changed_.notify_all();
}

void Run::work(int index) {
  {
    auto options = o_.client;
    // Several inference tokens: each worker sends as one of them, round robin (several clients).
    if (!options.tokens.empty()) options.token = options.tokens[static_cast<size_t>(index) % options.tokens.size()];
    V2Client client(options);
    Slot s;
    while (claim(&s)) send(client, s);
    client.stop();
  }
  std::lock_guard<std::mutex> lock(mu_);
  --workers_left_;
  changed_.notify_all();
}

// --append: the t of this run's first second, so t keeps counting from the file's first line
// (and stays increasing). A missing or empty file starts at 0.
int64_t continued_clock(const std::string& path, double t0_unix) {
  std::ifstream in(path);
  std::string line, first, last;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (first.empty()) first = line;
    last = line;
  }
  if (first.empty()) return 0;
  const auto a = nlohmann::json::parse(first, nullptr, false), b = nlohmann::json::parse(last, nullptr, false);
  if (a.is_discarded() || b.is_discarded() || !a.contains("time_s") || !b.contains("t")) {
    throw data_format("--append: " + path + " is not a traffic log");
  }
  const auto since_first = static_cast<int64_t>(std::llround(t0_unix - a["time_s"].get<double>()));
  return std::max<int64_t>(since_first, b["t"].get<int64_t>() + 1);
}

size_t Run::phase_of_second(int64_t t) const {
  size_t p = 0;
  while (p + 1 < phase_start_s_.size() && t >= phase_start_s_[p + 1]) ++p;
  return p;
}

std::string Run::progress_status(size_t phase, const SecondStats& s) const {
  const auto& c = s.counters;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s  sent %lld failed %lld  benign %lld/%lld attacked %lld/%lld",
                summaries_[phase].kind.c_str(), static_cast<long long>(c.sent), static_cast<long long>(c.failed),
                static_cast<long long>(c.benign_correct), static_cast<long long>(c.benign_n),
                static_cast<long long>(c.attacked_correct), static_cast<long long>(c.attacked_n));
  return buf;
}

TrafficReport Run::execute() {
  std::ofstream file;
  std::ostream* out = &std::cout;
  TrafficReport report;
  report.seed = o_.seed;
  t0_ = Clock::now();
  const double t0_unix = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const int64_t t_offset = o_.append ? continued_clock(o_.out, t0_unix) : 0;
  if (o_.out != "-") {
    file.open(o_.out, std::ios::out | (o_.append ? std::ios::app : std::ios::trunc));
    if (!file) throw io_error("--out: cannot write '" + o_.out + "'");
    out = &file;
  }
  report.start_unix_s = t0_unix;
  std::vector<SquareAttacker::Counts> warm(w_.plans.size());
  for (size_t p = 0; p < w_.plans.size(); ++p) {
    if (!w_.plans[p].square) continue;
    warm[p] = w_.plans[p].square->counts();
    const auto begin = t0_ + std::chrono::seconds(phase_start_s_[p]);
    w_.plans[p].square->run_between(begin, begin + std::chrono::seconds(o_.phases[p].seconds));
  }
  workers_left_ = o_.concurrency;
  std::vector<std::thread> workers;
  for (int i = 0; i < o_.concurrency; ++i) workers.emplace_back([this, i] { work(i); });

  ProgressBar bar("traffic", total_s_, o_.progress);
  bool write_failed = false;
  for (int64_t t = 0; t < total_s_; ++t) {
    const auto second_end = t0_ + std::chrono::seconds(t + 1);
    SecondStats done;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto ready = [&] {
        if (Clock::now() < second_end) return false;
        if (!claims_done_ && frontier_s_ <= t) return false;
        const auto it = seconds_.find(t);
        return it == seconds_.end() || it->second.completed == it->second.claimed;
      };
      while (!ready()) {
        if (Clock::now() < second_end) {
          changed_.wait_until(lock, second_end);
        } else {
          changed_.wait(lock);
        }
      }
      const auto it = seconds_.find(t);
      if (it != seconds_.end()) {
        done = std::move(it->second);
        seconds_.erase(it);
      }
    }
    const size_t phase = phase_of_second(t);
    *out << second_line(t + t_offset, t0_unix + static_cast<double>(t), summaries_[phase].kind, done)
                .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
         << '\n'
         << std::flush;
    write_failed = write_failed || !out->good();  // thrown after the workers are joined
    bar.update(t + 1, progress_status(phase, done));
    report.seconds = t + 1;
    if (o_.stop && o_.stop->load()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (claims_done_ && frontier_s_ <= t) break;  // every scheduled second is written
    }
  }
  for (auto& t : workers) t.join();
  bar.finish();
  for (size_t p = 0; p < w_.plans.size(); ++p) {
    auto& s = summaries_[p];
    s.craft_seconds = w_.plans[p].craft_seconds;
    if (!w_.plans[p].square) continue;
    w_.plans[p].square->stop();
    const auto c = w_.plans[p].square->counts();
    s.square_queries = c.queries - warm[p].queries;
    s.square_failed_queries = c.failed_queries - warm[p].failed_queries;
    s.square_crafted = c.crafted - warm[p].crafted;
  }
  if (write_failed) throw io_error("--out: writing '" + o_.out + "' failed");
  report.phases = summaries_;
  return report;
}

}  // namespace

nlohmann::json TrafficReport::to_json() const {
  nlohmann::json phases_json = nlohmann::json::array();
  for (const auto& p : phases) phases_json.push_back(p.to_json());
  return {{"start_unix_s", start_unix_s}, {"seconds", seconds}, {"seed", seed}, {"phases", phases_json}};
}

TrafficReport run_traffic(Workload& w, const TrafficOptions& o, const RequestObserver& observe) {
  o.validate();
  if (w.plans.size() != o.phases.size() || !w.x.defined() || w.x.size(0) != static_cast<int64_t>(w.order.size())) {
    throw invalid_argument("run_traffic: the workload was not prepared for these options");
  }
  Run run(w, o, observe);
  return run.execute();
}

}  // namespace bulwark::traffic
