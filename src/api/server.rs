//! HTTP: `/metrics` (OpenMetrics or classic text by `Accept`, gzip by `Accept-Encoding`: see
//! `negotiate`), `/healthz`, and a small landing page at `/`. hyper 1 + tokio.
//! Concurrent scrapes share one collection: a scrape that arrives while another collects waits for
//! it and reuses its result rather than starting a second `lvs` against possibly hung storage.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::actions::{ActionRequest, Engine};
use crate::api::peer::PeerRequest;
use crate::collect::Collector;
use crate::negotiate::{self, Format};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Server {
    collector: Collector,
    /// Actions and node-to-node calls; `Err(why)` when this agent cannot act (no secret).
    engine: Result<Arc<Engine>, String>,
    /// The last rendered scrape and when it started, kept only while other scrapes wait for it.
    last: Mutex<Option<(Instant, Bytes)>>,
    /// Scrapes queued on `last`.
    waiting: AtomicUsize,
    /// The watchdog (`/v1/watchdog`), when it runs.
    watchdog: Option<Arc<crate::watchdog::Watchdog>>,
}

impl Server {
    /// An observe-only agent (no actions: /v1/ answers 503).
    pub fn new(collector: Collector) -> Arc<Self> {
        Self::with_engine(
            collector,
            Err("actions are not enabled in this process".into()),
            None,
        )
    }

    /// An agent that acts (`engine`; `Err(why)`: /v1/ answers 503 with why) and, when it runs,
    /// serves `/v1/watchdog` from `watchdog`.
    pub fn with_engine(
        collector: Collector,
        engine: Result<Arc<Engine>, String>,
        watchdog: Option<Arc<crate::watchdog::Watchdog>>,
    ) -> Arc<Self> {
        Arc::new(Server {
            collector,
            engine,
            last: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            watchdog,
        })
    }

    /// Metrics for a request that arrived at `asked`: one collection at a time, and a scrape that
    /// queued behind another reuses its result when that collection started after it arrived
    /// (never older data than asked for).
    pub async fn metrics(&self, asked: Instant) -> Bytes {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut last = self.last.lock().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if let Some((started, text)) = last.as_ref() {
            if *started >= asked {
                return text.clone();
            }
        }
        let started = Instant::now();
        // Bytes: served to every waiter without copying (1,000 DRBD minors are ~7 MB of text).
        let text = Bytes::from(self.collector.render().await);
        // Keep it only for scrapes already queued: an idle agent holds no old rendering.
        *last = (self.waiting.load(Ordering::SeqCst) > 0).then(|| (started, text.clone()));
        text
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let asked = Instant::now();
        if req.uri().path().starts_with("/v1/") {
            return self.api(req).await;
        }
        let path = req.uri().path();
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served here\n",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/metrics" => {
                let values = |h| {
                    req.headers()
                        .get_all(h)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect::<Vec<_>>()
                };
                let format = negotiate::format(&values(ACCEPT));
                let gzip = negotiate::gzip(&values(ACCEPT_ENCODING));
                let body = self.metrics(asked).await;
                metrics_response(body, format, gzip).await
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/" => {
                let mut r = Response::new(Full::new(Bytes::from(landing_page())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: this agent serves /metrics, /healthz and /\n",
            ),
        }
    }
}

/// The `/metrics` answer in the negotiated format and encoding. Conversion to classic text and
/// gzip run on the blocking pool: for thousands of series they are milliseconds of CPU that would
/// otherwise stall every other connection served by this runtime thread.
async fn metrics_response(om: Bytes, format: Format, gzip: bool) -> Response<Full<Bytes>> {
    let work = move || -> std::io::Result<Bytes> {
        let text = match format {
            Format::OpenMetrics => om,
            Format::Classic => {
                // render() writes UTF-8; an empty answer here would be a bug, not bad input.
                let om = std::str::from_utf8(&om).unwrap_or_default();
                Bytes::from(crate::metrics::to_prometheus_text(om))
            }
        };
        if !gzip {
            return Ok(text);
        }
        // Fastest level: on a LAN the scrape is bound by CPU (ours to compress, Prometheus' to
        // inflate), not bytes; level 1 already shrinks this repetitive text ~10x.
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() / 8),
            flate2::Compression::fast(),
        );
        enc.write_all(&text)?;
        Ok(Bytes::from(enc.finish()?))
    };
    let body = match tokio::task::spawn_blocking(work).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return owned_text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot compress the metrics: {e}\n"),
            )
        }
        Err(e) => {
            return owned_text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the metrics failed: {e}\n"),
            )
        }
    };
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(match format {
            Format::OpenMetrics => OPENMETRICS,
            Format::Classic => PROMETHEUS_TEXT,
        }),
    );
    if gzip {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    // Caches between scraper and agent must not hand one client's format to another.
    h.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    r
}

impl Server {
    /// `POST /v1/action` (operator: `vmwarden ctl`), `/v1/peer` (other agents), `/v1/status`.
    /// JSON in and out, `Authorization: Bearer CLUSTER_SECRET` required.
    async fn api(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let engine = match &self.engine {
            Ok(e) => e.clone(),
            Err(why) => return owned_text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        };
        if req.method() != Method::POST {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the /v1/ API takes POST with a JSON body\n",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !engine.secret().accepts(auth) {
            tracing::warn!(
                path = req.uri().path(),
                "API call without the cluster secret refused"
            );
            return text(
                StatusCode::UNAUTHORIZED,
                "the cluster secret is required (Authorization: Bearer ...)\n",
            );
        }
        let path = req.uri().path().to_string();
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return owned_text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body (at most 64 KiB): {e}\n"),
                )
            }
        };
        fn parse<T: serde::de::DeserializeOwned>(
            b: &[u8],
        ) -> Result<T, Box<Response<Full<Bytes>>>> {
            serde_json::from_slice(b).map_err(|e| {
                Box::new(owned_text(
                    StatusCode::BAD_REQUEST,
                    format!("bad JSON request: {e}\n"),
                ))
            })
        }
        let out = match path.as_str() {
            "/v1/action" => match parse::<ActionRequest>(&body) {
                Ok(r) => serde_json::to_vec(&engine.run(r).await),
                Err(resp) => return *resp,
            },
            "/v1/peer" => match parse::<PeerRequest>(&body) {
                Ok(r) => serde_json::to_vec(&engine.handle_peer(r).await),
                Err(resp) => return *resp,
            },
            "/v1/status" => match parse::<StatusRequest>(&body) {
                Ok(r) => serde_json::to_vec(&engine.cluster_status(&r.vm).await),
                Err(resp) => return *resp,
            },
            "/v1/watchdog" => match parse::<WatchdogRequest>(&body) {
                Ok(r) => serde_json::to_vec(&self.watchdog_call(r)),
                Err(resp) => return *resp,
            },
            _ => {
                return text(
                    StatusCode::NOT_FOUND,
                    "unknown API path: /v1/action, /v1/peer, /v1/status, /v1/watchdog\n",
                )
            }
        };
        match out {
            Ok(json) => {
                let mut r = Response::new(Full::new(Bytes::from(json)));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            Err(e) => owned_text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the answer: {e}\n"),
            ),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct StatusRequest {
    pub vm: String,
}

/// `POST /v1/watchdog`: `{"op": "status"}` (every VM) or `{"op": "reset", "vm": "VM"}`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct WatchdogRequest {
    pub op: String,
    #[serde(default)]
    pub vm: Option<String>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct WatchdogReply {
    pub ok: bool,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub vms: Vec<serde_json::Value>,
}

impl Server {
    fn watchdog_call(&self, r: WatchdogRequest) -> WatchdogReply {
        let Some(w) = &self.watchdog else {
            return WatchdogReply {
                message: "the watchdog does not run on this agent ([watchdog] enabled = false, or libvirt disabled)".into(),
                ..Default::default()
            };
        };
        match (r.op.as_str(), r.vm) {
            ("status", _) => WatchdogReply {
                ok: true,
                vms: w
                    .views()
                    .iter()
                    .filter_map(|v| serde_json::to_value(v).ok())
                    .collect(),
                ..Default::default()
            },
            ("reset", Some(vm)) => match crate::lock::validate_name(crate::lock::NameKind::Vm, &vm)
            {
                Ok(()) => WatchdogReply {
                    ok: true,
                    message: w.reset(&vm),
                    ..Default::default()
                },
                Err(e) => WatchdogReply {
                    message: e.to_string(),
                    ..Default::default()
                },
            },
            (op, _) => WatchdogReply {
                message: format!("unknown watchdog op {op:?} (status, or reset with a vm)"),
                ..Default::default()
            },
        }
    }
}

fn owned_text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn landing_page() -> String {
    format!(
        "<!doctype html>\n<html><head><title>vmwarden</title></head><body>\n\
         <h1>vmwarden {}</h1>\n\
         <p>Per-node agent for KVM/libvirt clusters on shared LVM (lvmlockd + sanlock) and DRBD.</p>\n\
         <ul><li><a href=\"/metrics\">/metrics</a> — OpenMetrics for Prometheus</li>\n\
         <li><a href=\"/healthz\">/healthz</a> — liveness</li></ul>\n\
         </body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Bind `addr` and serve until `shutdown` resolves.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: log, pause briefly, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, "connection ended with an error: {e}");
            }
        });
    }
}

pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
