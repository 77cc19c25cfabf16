//! Enqueue → delivery latency from the engine's `hikyaku_delivery_latency_seconds` histogram
//! (time from a job's `queued_ms` to the accepting reply, per site), scraped once at the end
//! of a run and summed over sites.

use std::net::SocketAddr;

use serde::Serialize;

use crate::promtext;

/// The engine's histogram.
pub const METRIC: &str = "hikyaku_delivery_latency_seconds";

/// Latency figures for the report; `None` (JSON `null`) when the engine does not export them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median enqueue → accepted, ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub latency_p99_ms: Option<f64>,
    /// Observations in the histogram (should equal the messages delivered).
    pub latency_samples: Option<u64>,
    /// Why the figures are missing, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_note: Option<String>,
}

impl Latency {
    /// No figures, with a reason.
    pub fn missing(note: impl Into<String>) -> Self {
        Latency {
            latency_note: Some(note.into()),
            ..Latency::default()
        }
    }

    /// The figures of a `/metrics` text.
    pub fn from_text(text: &str) -> Self {
        let Some(h) = promtext::histogram(text, METRIC) else {
            return Latency::missing(format!(
                "the engine's /metrics has no {METRIC} histogram (engine too old?)"
            ));
        };
        let ms = |q: f64| promtext::quantile(q, &h.buckets).map(|s| (s * 1e6).round() / 1e3);
        let samples = h.buckets.last().map_or(h.count, |&(_, n)| n);
        let mut l = Latency {
            latency_p50_ms: ms(0.5),
            latency_p99_ms: ms(0.99),
            latency_samples: Some(samples.max(0.0) as u64),
            latency_note: None,
        };
        if l.latency_p50_ms.is_none() {
            l.latency_note = Some(format!("{METRIC} has no observations"));
        }
        l
    }

    /// Scrapes `http://addr/metrics`; never fails (a missing endpoint becomes a note).
    pub async fn scrape(addr: SocketAddr) -> Self {
        match crate::httpc::request(addr, "GET", "/metrics", None, None).await {
            Ok(r) if r.status == 200 => Latency::from_text(&String::from_utf8_lossy(&r.body)),
            Ok(r) => Latency::missing(format!("GET http://{addr}/metrics: HTTP {}", r.status)),
            Err(e) => Latency::missing(format!("GET http://{addr}/metrics: {e:#}")),
        }
    }

    /// One line for the human tables.
    pub fn line(&self) -> String {
        match (self.latency_p50_ms, self.latency_p99_ms) {
            (Some(p50), Some(p99)) => format!(
                "latency            enqueue → accepted p50 {p50:.0} ms, p99 {p99:.0} ms ({} messages)\n",
                self.latency_samples.unwrap_or(0)
            ),
            _ => format!(
                "latency            n/a: {}\n",
                self.latency_note.as_deref().unwrap_or("no figures")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn figures_from_the_engine_text() {
        let text = "\
hikyaku_delivery_latency_seconds_bucket{site=\"a\",le=\"0.5\"} 0
hikyaku_delivery_latency_seconds_bucket{site=\"a\",le=\"1\"} 50
hikyaku_delivery_latency_seconds_bucket{site=\"a\",le=\"2.5\"} 100
hikyaku_delivery_latency_seconds_bucket{site=\"a\",le=\"+Inf\"} 100
hikyaku_delivery_latency_seconds_count{site=\"a\"} 100
hikyaku_delivery_latency_seconds_bucket{site=\"b\",le=\"0.5\"} 0
hikyaku_delivery_latency_seconds_bucket{site=\"b\",le=\"1\"} 50
hikyaku_delivery_latency_seconds_bucket{site=\"b\",le=\"2.5\"} 100
hikyaku_delivery_latency_seconds_bucket{site=\"b\",le=\"+Inf\"} 100
hikyaku_delivery_latency_seconds_count{site=\"b\"} 100
";
        let l = Latency::from_text(text);
        assert_eq!(l.latency_p50_ms, Some(1000.0));
        // Rank 198 of 200: 98 of the 100 in (1, 2.5] → 1 + 1.5 × 0.98 = 2.47 s.
        assert_eq!(l.latency_p99_ms, Some(2470.0));
        assert_eq!(l.latency_samples, Some(200));
        assert_eq!(l.latency_note, None);
        assert!(l.line().contains("p99 2470 ms"));
    }

    #[test]
    fn absent_metric_is_a_note_not_an_error() {
        let l = Latency::from_text("hikyaku_messages_total{site=\"a\"} 3\n");
        assert_eq!((l.latency_p50_ms, l.latency_p99_ms), (None, None));
        assert!(l
            .latency_note
            .as_deref()
            .is_some_and(|n| n.contains(METRIC)));
        let json = serde_json::to_value(&l).unwrap();
        assert!(json["latency_p50_ms"].is_null());
        assert!(json.get("latency_note").is_some());
        let empty = Latency::from_text(
            "hikyaku_delivery_latency_seconds_bucket{le=\"1\"} 0\nhikyaku_delivery_latency_seconds_bucket{le=\"+Inf\"} 0\n",
        );
        assert!(empty.latency_note.is_some());
        assert!(empty.line().contains("n/a"));
    }

    #[tokio::test]
    async fn scrape_without_an_endpoint_is_a_note() {
        let port = crate::procs::free_port().unwrap();
        let l = Latency::scrape(SocketAddr::from(([127, 0, 0, 1], port))).await;
        assert_eq!(l.latency_p50_ms, None);
        assert!(l.latency_note.is_some_and(|n| n.contains("/metrics")));
    }

    #[tokio::test]
    async fn scrape_reads_the_histogram() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = "hikyaku_delivery_latency_seconds_bucket{site=\"x\",le=\"1\"} 4\nhikyaku_delivery_latency_seconds_bucket{site=\"x\",le=\"+Inf\"} 4\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let l = Latency::scrape(addr).await;
        assert_eq!(l.latency_p50_ms, Some(500.0));
        assert_eq!(l.latency_samples, Some(4));
    }
}
