//! `GET /metrics` in Prometheus text format: requests by dialect, route and status with latency
//! histograms (recorded by the access log), and the core's counters and gauges.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{web, HttpResponse};

use crate::core::Core;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// The HTTP side of the metrics, shared by every worker.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), Series>>,
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
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry((dialect_of(route), route.to_string(), status)).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    fn render(&self, out: &mut String) {
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP gatehouse_http_requests_total HTTP requests answered, by dialect, route and status.\n");
        out.push_str("# TYPE gatehouse_http_requests_total counter\n");
        for ((dialect, route, status), s) in map.iter() {
            let _ = writeln!(
                out,
                "gatehouse_http_requests_total{{dialect=\"{dialect}\",route=\"{route}\",status=\"{status}\"}} {}",
                s.count
            );
        }
        out.push_str("# HELP gatehouse_http_request_duration_seconds Time to answer, by dialect and route.\n");
        out.push_str("# TYPE gatehouse_http_request_duration_seconds histogram\n");
        let mut by_route: BTreeMap<(&str, &str), Series> = BTreeMap::new();
        for ((dialect, route, _), s) in map.iter() {
            let t = by_route.entry((dialect, route.as_str())).or_default();
            t.count += s.count;
            t.sum += s.sum;
            for (i, b) in s.buckets.iter().enumerate() {
                t.buckets[i] += b;
            }
        }
        for ((dialect, route), s) in by_route {
            let labels = format!("dialect=\"{dialect}\",route=\"{route}\"");
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "gatehouse_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(out, "gatehouse_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "gatehouse_http_request_duration_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "gatehouse_http_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
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
    let mut out = String::with_capacity(8192);
    metrics.render(&mut out);
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
