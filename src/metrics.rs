//! Metrics in Prometheus's text format, for node_exporter's textfile
//! collector: what every daemon's exporter shares.
//!
//! The exposition format is written by the `prometheus` crate (the classic
//! text format 0.0.4 that node_exporter's textfile collector parses; the
//! OpenMetrics text that `prometheus-client` writes names counters apart
//! from their samples, which that collector does not take). Each daemon
//! builds a [`prometheus::Registry`] from its counters when it writes, and
//! [`MetricsFile`] replaces the file atomically, at most every
//! [`WRITE_INTERVAL`], never per record.
//!
//! Label values that come from records (node and jail names) are bounded
//! by [`BoundedLabels`]: any writer can make up names, and each label
//! value is a time series for Prometheus to keep.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Registry, TextEncoder};

use crate::durable;

/// The least time between two writes of a metrics file. node_exporter
/// reads the file at each scrape (15 s or more, as a rule), so writing
/// more often shows nothing more.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// The label value that stands for every name past the first ones (see
/// [`BoundedLabels`]). Node and jail names start with a letter or a digit,
/// so no real name is spelled so.
pub const OTHER: &str = "_other";

/// The label value for records that carry no node or no jail.
pub const NONE: &str = "_none";

/// Label values taken from records: the first `max` distinct names seen
/// (in the daemon's life) keep their own value; later ones all become
/// [`OTHER`]. First come, not most frequent: a series must not change
/// its label from one write to the next.
#[derive(Debug, Clone)]
pub struct BoundedLabels {
    max: usize,
    known: HashSet<String>,
}

impl BoundedLabels {
    pub fn new(max: usize) -> BoundedLabels {
        BoundedLabels {
            max,
            known: HashSet::new(),
        }
    }

    /// The label value for `name` (`None`: [`NONE`]), taking it in if
    /// there is room. Allocates only when it takes a name in: the watcher
    /// asks for every record it reads.
    pub fn label<'a>(&mut self, name: Option<&'a str>) -> &'a str {
        let Some(name) = name else {
            return NONE;
        };
        if self.known.contains(name) {
            return name;
        }
        if self.known.len() < self.max {
            self.known.insert(name.to_owned());
            return name;
        }
        OTHER
    }
}

/// Why a metric could not be registered or encoded: a bug (a name or label
/// the crate refuses), never the input's fault, since label values are
/// never refused.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("metrics file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// `registry`'s metrics in the text format.
pub fn encode(registry: &Registry) -> Result<String, MetricsError> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    // The encoder writes only what it was given as UTF-8 strings.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A metrics file that node_exporter's textfile collector reads: replaced
/// atomically (a temporary file in the same folder, renamed over it, so a
/// scrape never sees half a file), readable by all (node_exporter runs as
/// its own user), and rewritten only when its content changed. The same
/// text can be served over HTTP too (see [`serve`]), or only there.
#[derive(Debug)]
pub struct MetricsFile {
    path: Option<PathBuf>,
    served: Option<Served>,
    last_write: Option<Instant>,
    last_text: String,
}

impl MetricsFile {
    pub fn new(path: PathBuf) -> MetricsFile {
        MetricsFile::to(Some(path), None)
    }

    /// Metrics written to `path`, served by `served`, or both.
    pub fn to(path: Option<PathBuf>, served: Option<Served>) -> MetricsFile {
        MetricsFile {
            path,
            served,
            last_write: None,
            last_text: String::new(),
        }
    }

    /// Where the metrics go, for the log: the file, the URL, or both.
    pub fn describe(&self) -> String {
        let url = self
            .served
            .as_ref()
            .map(|s| format!("http://{}/metrics", s.addr));
        let path = self.path.as_ref().map(|p| p.display().to_string());
        match (path, url) {
            (Some(p), Some(u)) => format!("{p} and {u}"),
            (p, u) => p.or(u).unwrap_or_default(),
        }
    }

    /// How long until a write is allowed: zero when it is already.
    pub fn wait_before_write(&self) -> Duration {
        self.last_write.map_or(Duration::ZERO, |t| {
            WRITE_INTERVAL.saturating_sub(t.elapsed())
        })
    }

    /// How long since the last write (forever before the first).
    pub fn since_write(&self) -> Duration {
        self.last_write.map_or(Duration::MAX, |t| t.elapsed())
    }

    /// Writes `text` unless it is what the file holds already.
    pub fn write(&mut self, text: String) -> Result<(), MetricsError> {
        self.last_write = Some(Instant::now());
        if text == self.last_text {
            return Ok(());
        }
        if let Some(served) = &self.served {
            // A poisoned lock still holds a whole string: take it over.
            let mut shown = served.text.lock().unwrap_or_else(|e| e.into_inner());
            shown.clone_from(&text);
        }
        if let Some(path) = &self.path {
            durable::write_atomic(path, text.as_bytes(), 0o644).map_err(|source| {
                MetricsError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        self.last_text = text;
        Ok(())
    }
}

/// A daemon's metrics file written from a state of type `T` (its
/// counters): at start, at most every [`WRITE_INTERVAL`] after the state
/// changed, and at stop; never when it did not change, so an idle daemon
/// does not write (the monitor's and the publisher's; the watcher's has
/// gauges that follow the clock, see [`crate::watch::metrics`]).
#[derive(Debug)]
pub struct StateExporter<T> {
    file: MetricsFile,
    written: Option<T>,
    failing: bool,
}

impl<T: Clone + PartialEq> StateExporter<T> {
    pub fn new(path: PathBuf) -> StateExporter<T> {
        StateExporter {
            file: MetricsFile::new(path),
            written: None,
            failing: false,
        }
    }

    pub fn describe(&self) -> String {
        self.file.describe()
    }

    /// How long the daemon may wait before the file is due: `None` when
    /// `state` is what the file shows.
    pub fn due_in(&self, state: &T) -> Option<Duration> {
        (self.written.as_ref() != Some(state)).then(|| self.file.wait_before_write())
    }

    /// Writes the metrics `render` makes of `state` if they are due, or
    /// now if `force`. A failure is logged when it starts and when it ends.
    pub fn export(
        &mut self,
        state: &T,
        force: bool,
        render: impl FnOnce(&T) -> Result<Registry, MetricsError>,
    ) {
        if !force && self.due_in(state) != Some(Duration::ZERO) {
            return;
        }
        self.written = Some(state.clone());
        let result = render(state)
            .and_then(|r| encode(&r))
            .and_then(|text| self.file.write(text));
        self.failing = log_failure(result, self.failing, &self.file.describe());
    }
}

/// Logs a metrics write's failure when it starts and its end; returns
/// whether it failed.
pub fn log_failure(result: Result<(), MetricsError>, failing: bool, what: &str) -> bool {
    let failed = result.is_err();
    match (result, failing) {
        (Ok(()), true) => log::info!("metrics: {what} is written again"),
        (Err(e), false) => log::warn!("cannot write the metrics (will retry): {e}"),
        _ => {}
    }
    failed
}

/// Registers a counter of `value`.
pub fn counter(r: &Registry, name: &str, help: &str, value: u64) -> Result<(), MetricsError> {
    let c = prometheus::IntCounter::new(name, help)?;
    c.inc_by(value);
    r.register(Box::new(c))?;
    Ok(())
}

/// Registers a counter with one label, a value per label value.
pub fn counter_by<K: AsRef<str>, N: std::borrow::Borrow<u64>>(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (K, N)>,
) -> Result<(), MetricsError> {
    let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &[label])?;
    for (key, n) in values {
        c.with_label_values(&[key.as_ref()]).inc_by(*n.borrow());
    }
    r.register(Box::new(c))?;
    Ok(())
}

/// Registers a gauge of integer `value`.
pub fn int_gauge(r: &Registry, name: &str, help: &str, value: i64) -> Result<(), MetricsError> {
    let g = prometheus::IntGauge::new(name, help)?;
    g.set(value);
    r.register(Box::new(g))?;
    Ok(())
}

/// Registers a gauge of `value`.
pub fn gauge(r: &Registry, name: &str, help: &str, value: f64) -> Result<(), MetricsError> {
    let g = prometheus::Gauge::new(name, help)?;
    g.set(value);
    r.register(Box::new(g))?;
    Ok(())
}

/// The HTTP endpoint's side of the metrics: the text it serves, which
/// the daemon replaces when it writes, and where it listens.
#[derive(Debug, Clone)]
pub struct Served {
    text: Arc<Mutex<String>>,
    addr: SocketAddr,
}

impl Served {
    /// The address it listens on (the port chosen, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Why the endpoint cannot listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {why}")]
pub struct ServeError {
    addr: SocketAddr,
    why: String,
}

/// Serves `GET /metrics` on `addr` from a thread of its own, for a
/// Prometheus that scrapes this host directly. The caller decides whether
/// `addr` may be other than loopback (the text tells which bans this host
/// applies and which nodes it hears). The thread waits in `accept` and
/// serves one request at a time, each from the last text written: a
/// scrape costs no work in the daemon, and an idle endpoint none at all.
pub fn serve(addr: SocketAddr) -> Result<Served, ServeError> {
    let server = tiny_http::Server::http(addr).map_err(|e| ServeError {
        addr,
        why: e.to_string(),
    })?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    let served = Served {
        text: Arc::new(Mutex::new(String::new())),
        addr: bound,
    };
    let text = Arc::clone(&served.text);
    std::thread::Builder::new()
        .name("banshare-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                answer(request, &text);
            }
        })
        .map_err(|e| ServeError {
            addr,
            why: e.to_string(),
        })?;
    Ok(served)
}

/// One HTTP request: the metrics at `/metrics`, 404 elsewhere, 405 for
/// methods other than GET and HEAD.
fn answer(request: tiny_http::Request, text: &Mutex<String>) {
    use tiny_http::{Header, Method, Response};
    let response = match (request.method(), request.url()) {
        (Method::Get | Method::Head, "/metrics") => {
            let body = text.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let kind = Header::from_bytes("Content-Type", prometheus::TEXT_FORMAT)
                .expect("a valid header");
            Response::from_string(body).with_header(kind)
        }
        (Method::Get | Method::Head, _) => {
            Response::from_string("banshare: see /metrics\n").with_status_code(404)
        }
        _ => Response::from_string("").with_status_code(405),
    };
    // The client may have gone; nothing to do about it.
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_bound_share_one_label() {
        let mut labels = BoundedLabels::new(2);
        assert_eq!(labels.label(Some("web1")), "web1");
        assert_eq!(labels.label(None), NONE);
        assert_eq!(labels.label(Some("web2")), "web2");
        assert_eq!(labels.label(Some("web3")), OTHER);
        assert_eq!(labels.label(Some("web1")), "web1", "first come keeps it");
    }

    #[test]
    fn the_file_is_replaced_whole_and_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banshare.prom");
        let mut file = MetricsFile::new(path.clone());
        assert_eq!(file.wait_before_write(), Duration::ZERO);
        file.write("a 1\n".into()).unwrap();
        assert!(file.wait_before_write() > Duration::ZERO);
        std::fs::remove_file(&path).unwrap();
        file.write("a 1\n".into()).unwrap();
        assert!(!path.exists(), "the same text is not written again");
        file.write("a 2\n".into()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
