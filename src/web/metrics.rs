//! `GET /metrics` in Prometheus text format: requests by dialect, route and status with latency
//! histograms (recorded by the access log), and the core's counters and gauges.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::core::Core;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

const REQUESTS: &str = "gatehouse_http_requests_total";
const DURATION: &str = "gatehouse_http_request_duration_seconds";
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
/// Tells one `Metrics` from another (tests run many servers in one process).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The HTTP side of the metrics, shared by every worker. Its own Prometheus recorder (never the
/// global one): counters are atomic adds, latencies are pushed onto a lock-free bucket that a scrape
/// or [`upkeep`] folds into the histogram.
pub struct Metrics {
    id: u64,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

/// One route's handles, kept by each worker thread so that a request takes no lock and, once its
/// route and status have been seen, allocates only a block of latency samples every 64 requests.
struct RouteSeries {
    duration: Histogram,
    by_status: Vec<(u16, Counter)>,
}

#[derive(Default)]
struct Cache {
    owner: u64,
    routes: HashMap<String, RouteSeries>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::default();
}

/// The dialect a route pattern belongs to.
fn dialect_of(route: &str) -> &'static str {
    if route.starts_with("/iam/") {
        "forepaas"
    } else if route.starts_with("/cms/") {
        "smartserver"
    } else if route.starts_with("/api/v3/ua") {
        "iqm"
    } else if route.contains("{app}") {
        "iampass"
    } else {
        "gatehouse"
    }
}

impl Metrics {
    pub fn new() -> Result<Self, BuildError> {
        let recorder =
            PrometheusBuilder::new().set_buckets_for_metric(Matcher::Full(DURATION.into()), &BUCKETS)?.build_recorder();
        recorder.describe_counter(
            KeyName::from_const_str(REQUESTS),
            None,
            SharedString::const_str("HTTP requests answered, by dialect, route and status."),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(DURATION),
            None,
            SharedString::const_str("Time to answer, by dialect and route."),
        );
        let handle = recorder.handle();
        Ok(Metrics { id: NEXT_ID.fetch_add(1, Ordering::Relaxed) + 1, recorder, handle })
    }

    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let cached = CACHE.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.owner != self.id {
                *cache = Cache { owner: self.id, routes: HashMap::new() };
            }
            match cache.routes.get_mut(route) {
                Some(series) => self.observe(series, route, status, elapsed),
                None => {
                    let mut series = self.series(route);
                    self.observe(&mut series, route, status, elapsed);
                    cache.routes.insert(route.to_owned(), series);
                }
            }
        });
        if cached.is_err() {
            // The thread is exiting: register (the recorder hands back the same series) and record.
            self.observe(&mut self.series(route), route, status, elapsed);
        }
    }

    fn series(&self, route: &str) -> RouteSeries {
        let labels = vec![Label::new("dialect", dialect_of(route)), Label::new("route", route.to_owned())];
        RouteSeries {
            duration: self.recorder.register_histogram(&Key::from_parts(DURATION, labels), &METADATA),
            by_status: Vec::new(),
        }
    }

    fn observe(&self, series: &mut RouteSeries, route: &str, status: u16, elapsed: Duration) {
        series.duration.record(elapsed);
        if let Some((_, counter)) = series.by_status.iter().find(|(s, _)| *s == status) {
            counter.increment(1);
            return;
        }
        let labels = vec![
            Label::new("dialect", dialect_of(route)),
            Label::new("route", route.to_owned()),
            Label::new("status", status.to_string()),
        ];
        let counter = self.recorder.register_counter(&Key::from_parts(REQUESTS, labels), &METADATA);
        counter.increment(1);
        series.by_status.push((status, counter));
    }

    /// Folds the latencies recorded since the last scrape into the histograms, so that memory stays
    /// bounded when nobody scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Runs [`Metrics::upkeep`] every five seconds (the exporter's own default), for the life of the server.
pub async fn upkeep(metrics: web::Data<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        metrics.upkeep();
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

async fn serve(core: web::Data<Core>, metrics: web::Data<Metrics>) -> HttpResponse {
    let mut out = metrics.handle.render();
    out.reserve(4096);
    let s = core.stats();
    metric(
        &mut out,
        "gatehouse_logins_total",
        "counter",
        "Password and API-key sign-ins, by result.",
        &[("result=\"ok\"", s.logins_ok), ("result=\"failed\"", s.logins_failed)],
    );
    metric(&mut out, "gatehouse_throttled_total", "counter", "Sign-ins refused by the throttle.", &[("", s.throttled)]);
    metric(&mut out, "gatehouse_lockouts_total", "counter", "Accounts and addresses locked out.", &[("", s.lockouts)]);
    metric(
        &mut out,
        "gatehouse_audit_not_written_total",
        "counter",
        "Failed sign-ins and credentials not written to the audit log: their caller was already held back.",
        &[("", s.audit_not_written)],
    );
    metric(
        &mut out,
        "gatehouse_hash_queue_depth",
        "gauge",
        "Password hashes waiting for a worker.",
        &[("", s.hash_waiting)],
    );
    metric(
        &mut out,
        "gatehouse_hash_busy_total",
        "counter",
        "Sign-ins turned away because the hashing queue was full.",
        &[("", s.hash_rejected)],
    );
    metric(
        &mut out,
        "gatehouse_reaper_removed_total",
        "counter",
        "Rows the reaper deleted, by kind.",
        &[
            ("kind=\"tokens\"", s.reaped_tokens),
            ("kind=\"links\"", s.reaped_links),
            ("kind=\"nonces\"", s.reaped_nonces),
            ("kind=\"audit\"", s.reaped_audit),
        ],
    );
    metric(
        &mut out,
        "gatehouse_reaper_batches_total",
        "counter",
        "Transactions of the reaper, each at most reaper.batch rows.",
        &[("", s.reaper_batches)],
    );
    metric(
        &mut out,
        "gatehouse_token_uses_folded_total",
        "counter",
        "Token uses folded from the SQLite log into their tokens before a reaper sweep.",
        &[("", s.uses_folded)],
    );
    metric(
        &mut out,
        "gatehouse_token_uses_unfolded",
        "gauge",
        "Tokens whose last use is kept in memory, not yet written into their rows.",
        &[("", s.uses_unfolded)],
    );
    metric(
        &mut out,
        "gatehouse_reaper_sweeps_total",
        "counter",
        "Sweeps of the reaper finished.",
        &[("", s.reaper_sweeps)],
    );
    metric(
        &mut out,
        "gatehouse_db_pool_waits_total",
        "counter",
        "Database calls that found no idle pooled connection.",
        &[("", s.pool_waits)],
    );
    metric(
        &mut out,
        "gatehouse_db_writes_total",
        "counter",
        "Write transactions committed (writes that arrive together share a commit).",
        &[("", s.db_writes)],
    );
    metric(&mut out, "gatehouse_db_commits_total", "counter", "Commits made by the writer.", &[("", s.db_commits)]);
    metric(
        &mut out,
        "gatehouse_db_retries_total",
        "counter",
        "PostgreSQL transactions run again after a serialization failure, a deadlock or a lost connection.",
        &[("", s.db_retries)],
    );
    metric(
        &mut out,
        "gatehouse_db_unavailable_total",
        "counter",
        "Calls answered 503 because the database could not be reached or could not commit.",
        &[("", s.db_unavailable)],
    );
    metric(
        &mut out,
        "gatehouse_nonces_kept",
        "gauge",
        "Nonces of signed requests kept in memory to refuse replays.",
        &[("", s.nonces_kept)],
    );
    metric(
        &mut out,
        "gatehouse_db_pool_connections",
        "gauge",
        "Pooled database connections, by state.",
        &[("state=\"open\"", s.pool_open), ("state=\"idle\"", s.pool_idle)],
    );
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(out)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(serve));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(prefix))
    }

    #[test]
    fn two_metrics_on_one_thread_keep_their_own_counts() {
        let (a, b) = (Metrics::new().unwrap(), Metrics::new().unwrap());
        let ms = Duration::from_millis(3);
        a.record("/iam/login", 200, ms);
        b.record("/iam/login", 200, ms);
        a.record("/iam/login", 200, ms);
        a.record("/iam/login", 401, ms);
        b.record("/healthz", 200, ms);
        let (a, b) = (a.handle.render(), b.handle.render());
        let login = "gatehouse_http_requests_total{dialect=\"forepaas\",route=\"/iam/login\",status=";
        assert_eq!(line(&a, &format!("{login}\"200\"}} ")), Some("2"), "{a}");
        assert_eq!(line(&a, &format!("{login}\"401\"}} ")), Some("1"), "{a}");
        assert_eq!(line(&b, &format!("{login}\"200\"}} ")), Some("1"), "{b}");
        assert!(!a.contains("/healthz"), "{a}");
        let le = "gatehouse_http_request_duration_seconds_bucket{dialect=\"forepaas\",route=\"/iam/login\",le=";
        assert_eq!(line(&a, &format!("{le}\"0.0025\"}} ")), Some("0"), "{a}");
        assert_eq!(line(&a, &format!("{le}\"0.005\"}} ")), Some("3"), "{a}");
        let sum = line(&a, "gatehouse_http_request_duration_seconds_sum{dialect=\"forepaas\",route=\"/iam/login\"} ");
        assert!((sum.unwrap().parse::<f64>().unwrap() - 0.009).abs() < 1e-9, "{a}");
    }

    #[test]
    fn upkeep_keeps_what_was_recorded() {
        let m = Metrics::new().unwrap();
        m.record("/healthz", 200, Duration::from_millis(1));
        m.upkeep();
        m.record("/healthz", 200, Duration::from_millis(1));
        let text = m.handle.render();
        let count = "gatehouse_http_request_duration_seconds_count{dialect=\"gatehouse\",route=\"/healthz\"} ";
        assert_eq!(line(&text, count), Some("2"), "{text}");
    }
}
