//! `watch --metrics ADDR`: Prometheus metrics while tracing, for fleets
//! that alert on a kernel breaking the ordering.
//!
//! Exposition is `prometheus-client`'s (OpenMetrics text, which Prometheus
//! scrapes natively), served by hyper. Every name has the `dio_trace_`
//! prefix; labels are bounded: filesystem, device, verdict, violation
//! kind, reason, probe, never a pid, inode or path (NOTES §10). The
//! writes counted here are the same [`WriteReport`]s every other report
//! gets; the kernel's counters are read every tick and added as deltas.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use dio_trace_common::{counters::Counter as KernelCounter, fs::Fs};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, header::CONTENT_TYPE, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    analysis::{Summary, Verdict, engine::WriteReport},
    collect::{counters::Reading, ordered::OrderedCount},
    error::EnvError,
    kernel::dev_string,
    report::{Reporter, RunInfo},
};

/// The port `--metrics` is documented with (ebpf_exporter has 9435).
pub const DEFAULT_PORT: u16 = 9436;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    /// ordered | violation | inconclusive | failed.
    verdict: String,
    /// The violation kind; empty for other verdicts.
    kind: String,
    fs: String,
    /// "major:minor".
    device: String,
    /// The `--cgroup` directory the writer was in (at most 64 of them);
    /// empty without `--cgroup`.
    cgroup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: String,
    /// fentry, kprobe, tracepoint, ...; "none" when it did not attach.
    mechanism: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    kernel: String,
}

/// Kernel counters of direct writes seen and not counted, by the `reason`
/// label they get. `no_fs_facts`: a fleet host without ext4 that mounts
/// one later shows those writes here, not nowhere.
/// `buffered_fallback`: sync direct writes btrfs wrote through the page
/// cache (no direct write happened; the ordering does not apply).
const NOT_COUNTED: [(KernelCounter, &str); 7] = [
    (KernelCounter::NotSync, "not_sync"),
    (KernelCounter::NotExtending, "not_extending"),
    (KernelCounter::OtherFs, "other_fs"),
    (KernelCounter::NoFsFacts, "no_fs_facts"),
    (KernelCounter::FlagsUnknown, "flags_unknown"),
    (KernelCounter::Filtered, "filtered"),
    (KernelCounter::BufferedFallback, "buffered_fallback"),
];

/// The metric families, shared by the tracing loop (which counts) and the
/// HTTP server (which encodes).
pub struct Metrics {
    registry: Arc<Registry>,
    counted: Family<WriteLabels, Counter>,
    not_counted: Family<ReasonLabels, Counter>,
    direct_writes: Counter,
    records_lost: Counter,
    writes_lost: Counter,
    probes: Family<ProbeLabels, Gauge>,
    build: Family<BuildLabels, Gauge>,
    /// The kernel reading already added.
    last: Reading,
    /// `--cgroup` paths, for the `cgroup` label.
    kept: Vec<String>,
}

impl Metrics {
    /// `kept`: the `--cgroup` paths (from the cgroup2 root), if any.
    pub fn new(kept: Vec<String>) -> Self {
        let mut r = Registry::with_prefix("dio_trace");
        let counted = Family::<WriteLabels, Counter>::default();
        r.register(
            "writes_counted",
            "Counted writes (direct, sync-flavoured, size-extending) by verdict and violation kind",
            counted.clone(),
        );
        let not_counted = Family::<ReasonLabels, Counter>::default();
        r.register(
            "direct_writes_not_counted",
            "Direct writes the kernel saw and did not count, by reason",
            not_counted.clone(),
        );
        let direct_writes = Counter::default();
        r.register(
            "direct_writes",
            "Direct writes the kernel saw that passed the filters",
            direct_writes.clone(),
        );
        let records_lost = Counter::default();
        r.register(
            "records_lost",
            "Records the ring buffer could not take: the run cannot be called clean (raise --ringbuf-size)",
            records_lost.clone(),
        );
        let writes_lost = Counter::default();
        r.register(
            "writes_lost",
            "Whole counted writes lost with those records",
            writes_lost.clone(),
        );
        let probes = Family::<ProbeLabels, Gauge>::default();
        r.register(
            "probe_info",
            "Each probe and the mechanism that serves it (mechanism=\"none\": not attached)",
            probes.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        r.register(
            "build_info",
            "dio-trace version and the kernel release it traces",
            build.clone(),
        );
        Self {
            registry: Arc::new(r),
            counted,
            not_counted,
            direct_writes,
            records_lost,
            writes_lost,
            probes,
            build,
            last: Reading::default(),
            kept,
        }
    }

    /// A new kernel counter reading: add what grew since the last one.
    pub fn counters(&mut self, r: &Reading) {
        let grew = |c: KernelCounter| r.get(c).saturating_sub(self.last.get(c));
        for (c, reason) in NOT_COUNTED {
            let d = grew(c);
            if d > 0 {
                self.not_counted
                    .get_or_create(&ReasonLabels {
                        reason: reason.into(),
                    })
                    .inc_by(d);
            }
        }
        self.direct_writes.inc_by(grew(KernelCounter::DirectWrites));
        self.records_lost.inc_by(grew(KernelCounter::RingbufFull));
        self.writes_lost.inc_by(grew(KernelCounter::WritesLost));
        self.last = *r;
    }

    /// The exposition, as served.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Serve the exposition on `listener` until the runtime stops.
    /// Call inside the tracing runtime.
    pub fn serve(metrics: Arc<Mutex<Metrics>>, listener: std::net::TcpListener) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        let openmetrics = req
                            .headers()
                            .get(hyper::header::ACCEPT)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.contains("application/openmetrics-text"));
                        async move {
                            Ok::<_, std::convert::Infallible>(respond(
                                &metrics,
                                req.uri().path(),
                                openmetrics,
                            ))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(())
    }
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), else the
/// Prometheus text format 0.0.4 (curl, `promtool check metrics`), as the
/// official clients negotiate.
fn respond(metrics: &Mutex<Metrics>, path: &str, openmetrics: bool) -> Response<Full<Bytes>> {
    let text = || metrics.lock().map(|m| m.encode()).unwrap_or_default();
    let (status, kind, body) = match path {
        "/metrics" if openmetrics => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text(),
        ),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus_text(&text()),
        ),
        _ => (
            404,
            "text/plain; charset=utf-8",
            "dio-trace serves Prometheus metrics at /metrics\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = kind.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

/// `prometheus-client`'s OpenMetrics text as Prometheus text 0.0.4: the
/// two differ here only in that a counter family's HELP and TYPE carry the
/// `_total` its samples have, and in the `# EOF` terminator.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(meta.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Bind `addr` for `--metrics` before anything is attached, so a taken
/// port stops the run at once, with the fix.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, EnvError> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        EnvError(format!(
            "--metrics {addr}: cannot listen there: {e}; give another address or port (--metrics 127.0.0.1:PORT)"
        ))
    })?;
    l.set_nonblocking(true)
        .map_err(|e| EnvError(format!("--metrics {addr}: {e}")))?;
    Ok(l)
}

/// `--metrics` values: `PORT` or `:PORT` (loopback), or `IP:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port = s.strip_prefix(':').unwrap_or(s);
    if let Ok(p) = port.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
    }
    s.parse().map_err(|_| {
        format!("{s:?} is not an address to listen on: give PORT, :PORT (loopback) or IP:PORT (0.0.0.0:{DEFAULT_PORT} for every interface)")
    })
}

/// The metrics see what every report sees: a [`Reporter`] in the tee.
pub struct MetricsReporter(pub Arc<Mutex<Metrics>>);

impl MetricsReporter {
    /// `n` more counted writes with these labels: one by one as reports
    /// close them, or many at once where the kernel counted ordered ones.
    fn count(
        &self,
        verdict: &str,
        kind: String,
        fs: Fs,
        dev: u32,
        cgroup: Option<&str>,
        n: u64,
    ) -> std::io::Result<()> {
        let m = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("metrics lock poisoned"))?;
        // The deepest --cgroup directory holding the writer's cgroup.
        let cgroup = cgroup
            .and_then(|cg| {
                m.kept
                    .iter()
                    .filter(|k| crate::analysis::engine::under(cg, k))
                    .max_by_key(|k| k.len())
            })
            .cloned()
            .unwrap_or_default();
        m.counted
            .get_or_create(&WriteLabels {
                verdict: verdict.into(),
                kind,
                fs: fs.name().into(),
                device: dev_string(dev),
                cgroup,
            })
            .inc_by(n);
        Ok(())
    }
}

impl Reporter for MetricsReporter {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        let m = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("metrics lock poisoned"))?;
        for (probe, served) in &info.probes {
            let (mechanism, target) = served
                .as_deref()
                .and_then(|s| s.split_once(':'))
                .unwrap_or(("none", ""));
            m.probes
                .get_or_create(&ProbeLabels {
                    probe: probe.clone(),
                    mechanism: mechanism.into(),
                    target: target.into(),
                })
                .set(1);
        }
        m.build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                kernel: info.kernel.clone(),
            })
            .set(1);
        Ok(())
    }

    fn write(&mut self, w: &WriteReport) -> std::io::Result<()> {
        let kind = match &w.verdict {
            Verdict::Violation(k) => k.name().to_owned(),
            _ => String::new(),
        };
        self.count(
            w.verdict.name(),
            kind,
            w.begin.fs(),
            w.begin.dev,
            w.begin.cgroup.as_deref(),
            1,
        )
    }

    fn ordered_counted(&mut self, c: &OrderedCount, cgroup: Option<&str>) -> std::io::Result<()> {
        self.count(
            Verdict::Ordered.name(),
            String::new(),
            c.fs(),
            c.key.dev,
            cgroup,
            c.n,
        )
    }

    fn counters(&mut self, r: &Reading) -> std::io::Result<()> {
        let mut m = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("metrics lock poisoned"))?;
        m.counters(r);
        Ok(())
    }

    fn finish(&mut self, _: &Summary, info: &RunInfo) -> std::io::Result<()> {
        let mut m = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("metrics lock poisoned"))?;
        m.counters(&info.counters);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9436").unwrap(), "127.0.0.1:9436".parse().unwrap());
        assert_eq!(parse_addr(":9500").unwrap(), "127.0.0.1:9500".parse().unwrap());
        assert_eq!(
            parse_addr("0.0.0.0:9436").unwrap(),
            "0.0.0.0:9436".parse().unwrap()
        );
        assert!(parse_addr("localhost").unwrap_err().contains("IP:PORT"));
    }

    /// Ordered writes the kernel counted land where sent ones would: the
    /// same family and labels, the deepest `--cgroup` holding the writer,
    /// as many as counted.
    #[test]
    fn ordered_writes_counted_in_the_kernel_are_counted_under_their_labels() {
        use dio_trace_common::{
            ordered::OrderedKey,
            record::{EVENT_FS_SHIFT, EVENT_SYNC},
        };
        let m = Arc::new(Mutex::new(Metrics::new(vec!["/a".into(), "/a/b".into()])));
        let mut r = MetricsReporter(m.clone());
        let key = OrderedKey::new(9, (8 << 20) | 3, EVENT_SYNC | (Fs::Xfs as u32) << EVENT_FS_SHIFT);
        r.ordered_counted(&OrderedCount { key, n: 3 }, Some("/a/b/c"))
            .unwrap();
        r.ordered_counted(&OrderedCount { key, n: 2 }, Some("/a/b/c"))
            .unwrap();
        r.ordered_counted(&OrderedCount { key, n: 1 }, None).unwrap();
        let text = m.lock().unwrap().encode();
        let line = |cg: &str, n: u64| {
            format!(
                r#"dio_trace_writes_counted_total{{verdict="ordered",kind="",fs="xfs",device="8:3",cgroup="{cg}"}} {n}"#
            )
        };
        assert!(text.contains(&line("/a/b", 5)), "{text}");
        assert!(text.contains(&line("", 1)), "{text}");
    }

    #[test]
    fn counters_get_their_total_in_prometheus_text() {
        let mut m = Metrics::new(Vec::new());
        m.counters(&Reading::default());
        let text = prometheus_text(&m.encode());
        assert!(
            text.contains("# TYPE dio_trace_records_lost_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP dio_trace_records_lost_total Records"),
            "{text}"
        );
        assert!(text.contains("dio_trace_records_lost_total 0\n"), "{text}");
        assert!(!text.contains("# EOF"));
    }
}
