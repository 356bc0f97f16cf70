//! HTTP: `/metrics` (OpenMetrics or classic text by `Accept`, gzip by `Accept-Encoding`: see
//! `negotiate`), `/healthz`, a small landing page at `/`, and the `/v1/` API (docs/api.md) behind
//! the bearer tokens of `auth`. hyper 1 + tokio.
//! Every request is classified into a route template first (`classify`): the template is what the
//! metrics count and the audit names, and it says which role the route needs.
//! Concurrent scrapes share one collection: a scrape that arrives while another collects waits for
//! it and reuses its result rather than starting a second `lvs` against possibly hung storage.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, VARY,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

use crate::actions::{ActionRequest, Engine};
use crate::api::auth::{FailureLimiter, Identity, Need, Tokens};
use crate::api::peer::PeerRequest;
use crate::api::rest::{self, ActionTable, Verb};
use crate::api::stats::ApiStats;
use crate::collect::Collector;
use crate::config::ApiConfig;
use crate::lock::{validate_name, NameKind};
use crate::metrics::Registry;
use crate::negotiate::{self, Format};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Server {
    collector: Collector,
    /// Actions and node-to-node calls; `Err(why)` when this agent cannot act (no secret).
    engine: Result<Arc<Engine>, String>,
    /// The scrape collecting now, if one is: scrapes that arrive meanwhile wait for its result.
    scraping: std::sync::Mutex<Option<watch::Receiver<Option<Arc<Registry>>>>>,
    /// The watchdog (`/v1/watchdog`), when it runs.
    watchdog: Option<Arc<crate::watchdog::Watchdog>>,
    tokens: Tokens,
    limiter: FailureLimiter,
    pub stats: ApiStats,
    api: ApiConfig,
    /// Actions started through the resource routes.
    actions: Arc<std::sync::Mutex<ActionTable>>,
    /// When each alert last ran a remediation rule.
    cooldowns: crate::api::webhook::Cooldowns,
    /// One API collection at a time (`GET /v1/node`, `/v1/vms`): many readers must not start
    /// many `lvs` against storage that may hang.
    collecting: Mutex<()>,
}

impl Server {
    /// An observe-only agent (no actions: /v1/ answers 503; no tokens but open routes).
    pub fn new(collector: Collector) -> Arc<Self> {
        Self::with_engine(
            collector,
            Err("actions are not enabled in this process".into()),
            None,
            Tokens::from_pairs(&[]),
        )
    }

    /// An agent that acts (`engine`; `Err(why)`: /v1/ answers 503 with why), serves
    /// `/v1/watchdog` from `watchdog` when it runs, and accepts `tokens`.
    pub fn with_engine(
        collector: Collector,
        engine: Result<Arc<Engine>, String>,
        watchdog: Option<Arc<crate::watchdog::Watchdog>>,
        tokens: Tokens,
    ) -> Arc<Self> {
        let api = collector.config().api.clone();
        Arc::new(Server {
            collector,
            engine,
            scraping: std::sync::Mutex::new(None),
            watchdog,
            tokens,
            limiter: FailureLimiter::new(api.auth_failures_per_minute),
            stats: ApiStats::default(),
            api,
            actions: Arc::default(),
            cooldowns: Default::default(),
            collecting: Mutex::new(()),
        })
    }

    /// Metrics for a scrape. One collection at a time: a scrape that arrives while one runs
    /// waits for it and shares its result, so every scrape answers within the collector timeout
    /// (with `lvs` hung, waiting for a second collection would take twice that) and a burst of
    /// scrapes starts one `lvs`. The data is never older than the collection running when the
    /// scrape arrived.
    pub async fn metrics(&self) -> Arc<Registry> {
        loop {
            let running = {
                let mut slot = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
                match slot.as_ref() {
                    Some(rx) => Ok(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        *slot = Some(rx);
                        Err(tx)
                    }
                }
            };
            match running {
                Ok(mut rx) => {
                    // Err: the scrape collecting was dropped (its client left): collect anew.
                    if let Ok(text) = rx.wait_for(Option::is_some).await {
                        if let Some(text) = text.as_ref() {
                            return text.clone();
                        }
                    }
                }
                Err(tx) => {
                    let collecting = Collecting(&self.scraping);
                    // The families, not their text: each waiter writes them in the format and
                    // encoding it asked for, straight into its gzip encoder.
                    let mut reg = self.collector.render().await;
                    self.stats.register(&mut reg);
                    let reg = Arc::new(reg);
                    // A scrape arriving from now on collects anew; those waiting get this.
                    drop(collecting);
                    tx.send_replace(Some(reg.clone()));
                    return reg;
                }
            }
        }
    }

    /// One request from `source`: classified, authorized, answered, counted, and audited when
    /// it asks for a change.
    async fn handle(self: Arc<Self>, req: Request<Incoming>, source: SocketAddr) -> Resp {
        let r = classify(req.method(), req.uri().path(), &self.api);
        let mut audit = Audit::default();
        let resp = self.gate(req, &r, source, &mut audit).await;
        let code = resp.status().as_u16();
        self.stats.observe(r.template, code);
        if r.mutating || audit.mutating {
            let (token, role) = match &audit.who {
                Some(id) => (id.name.as_str(), id.role.as_str()),
                None => ("-", "-"),
            };
            tracing::info!(
                target: "vmwarden::audit",
                token,
                role,
                source = %source.ip(),
                route = r.template,
                vm = audit.vm.as_deref().unwrap_or("-"),
                action_id = audit.action_id.as_deref().unwrap_or("-"),
                result = audit.result.as_deref().unwrap_or(if code < 400 { "ok" } else { "refused" }),
                code,
                "api request"
            );
        }
        resp
    }

    /// Method, engine, token and role checks, then the route's handler.
    async fn gate(
        &self,
        req: Request<Incoming>,
        r: &Routed,
        source: SocketAddr,
        audit: &mut Audit,
    ) -> Resp {
        if r.route == Route::NotFound {
            return if req.uri().path().starts_with("/v1/") {
                json_error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown API path {:?}: see docs/api.md",
                        truncate(req.uri().path(), 100)
                    ),
                )
            } else {
                text(
                    StatusCode::NOT_FOUND,
                    "not found: this agent serves /metrics, /healthz, / and the /v1/ API\n",
                )
            };
        }
        if !r.methods.contains(req.method()) {
            let allow = r
                .methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = owned_text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} takes {allow}\n", r.template),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(ALLOW, v);
            }
            return resp;
        }
        let engine = match (&self.engine, r.route.needs_engine()) {
            (Err(why), true) => {
                return json_error(StatusCode::SERVICE_UNAVAILABLE, why.clone());
            }
            (Ok(e), _) => Some(e.clone()),
            (Err(_), false) => None,
        };
        if r.need != Need::Open {
            let now = Instant::now();
            if let Some(left) = self.limiter.blocked(source.ip(), now) {
                let mut resp = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many requests with a missing or unknown token from {}: wait {} s",
                        source.ip(),
                        left.as_secs().max(1)
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&left.as_secs().max(1).to_string()) {
                    resp.headers_mut().insert(RETRY_AFTER, v);
                }
                return resp;
            }
            let auth = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let Some(who) = self.tokens.identify(auth, r.need) else {
                self.limiter.failed(source.ip(), now);
                tracing::warn!(
                    source = %source.ip(),
                    route = r.template,
                    "API call without a valid token refused"
                );
                let mut resp = json_error(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "{} a valid token (Authorization: Bearer TOKEN; role {}): `vmwarden ctl` reads it from [api] token_file or --token-file",
                        if auth.is_some() { "this route needs" } else { "missing token: this route needs" },
                        r.need.describe()
                    ),
                );
                resp.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            };
            audit.who = Some(who.clone());
            if !r.need.allows(who.role) {
                return json_error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "the token {:?} has the role {}; {} needs {}",
                        who.name,
                        who.role.as_str(),
                        r.template,
                        r.need.describe()
                    ),
                );
            }
        }
        match r.route {
            Route::Metrics => {
                let values = |h| {
                    req.headers()
                        .get_all(h)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect::<Vec<_>>()
                };
                let format =
                    negotiate::format(&values(ACCEPT), self.collector.config().agent.openmetrics);
                let gzip = negotiate::gzip(&values(ACCEPT_ENCODING));
                let body = self.metrics().await;
                metrics_response(body, format, gzip).await
            }
            Route::Healthz => text(StatusCode::OK, "ok\n"),
            Route::Landing => {
                let mut r = Response::new(Full::new(Bytes::from(landing_page())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            Route::Node => {
                let cfg = self.collector.config();
                // The lock only around this node's collection: a peer asking this node's
                // /v1/vms meanwhile must not wait for our question to it.
                let (snap, peers) = tokio::join!(
                    async {
                        let _one = self.collecting.lock().await;
                        self.collector.collect().await
                    },
                    self.collector.ask_peers()
                );
                let obs = self.collector.judge(snap, &peers);
                let out = rest::node_status(
                    &obs,
                    cfg,
                    &cfg.node_name(),
                    self.watchdog.as_ref(),
                    &self.actions,
                );
                json_response(StatusCode::OK, out.to_string().into_bytes())
            }
            Route::ClusterVms => {
                let cfg = self.collector.config();
                let node = cfg.node_name();
                // This node's VMs and every peer's, asked at once (each peer under its timeout).
                let (local, peers) = tokio::join!(
                    async {
                        let _one = self.collecting.lock().await;
                        let snap = self.collector.collect().await;
                        rest::vms(&snap, cfg, &node, self.watchdog.as_ref(), &self.actions)
                    },
                    self.collector.ask_peers()
                );
                let reply = crate::cluster::merge(&node, local, &peers);
                match serde_json::to_vec(&reply) {
                    Ok(j) => json_response(StatusCode::OK, j),
                    Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            Route::Vms | Route::Vm => {
                let arg = match &r.arg {
                    Some(Err(why)) => return json_error(StatusCode::BAD_REQUEST, why.clone()),
                    Some(Ok(a)) => Some(a.clone()),
                    None => None,
                };
                let cfg = self.collector.config();
                let node = cfg.node_name();
                let snap = {
                    let _one = self.collecting.lock().await;
                    self.collector.collect().await
                };
                let wd = self.watchdog.as_ref();
                let out = match rest::vms(&snap, cfg, &node, wd, &self.actions) {
                        Err(why) => return json_error(StatusCode::SERVICE_UNAVAILABLE, why),
                        Ok(list) => match arg {
                            None => serde_json::json!({ "node": node, "vms": list }).to_string(),
                            Some(vm) => match list.into_iter().find(|v| v.name == vm) {
                                Some(v) => serde_json::to_string(&v).unwrap_or_default(),
                                None => {
                                    return json_error(
                                        StatusCode::NOT_FOUND,
                                        format!("{vm} is not defined on {node} (`vmwarden ctl vms --cluster` shows every node's VMs)"),
                                    )
                                }
                            },
                        },
                };
                json_response(StatusCode::OK, out.into_bytes())
            }
            Route::Alertmanager => {
                let Some(engine) = engine else {
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "this agent cannot act".into(),
                    );
                };
                let am = &self.collector.config().alertmanager;
                let body = match self.read_body_max(req, am.max_body_bytes).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                crate::api::webhook::handle(
                    &engine,
                    &self.actions,
                    self.watchdog.as_ref(),
                    &am.rules,
                    &self.cooldowns,
                    &body,
                    audit,
                )
            }
            Route::VmAction(_) | Route::ActionGet => {
                let arg = match &r.arg {
                    Some(Ok(a)) => a.clone(),
                    Some(Err(why)) => return json_error(StatusCode::BAD_REQUEST, why.clone()),
                    None => return json_error(StatusCode::BAD_REQUEST, "no argument".into()),
                };
                let Some(engine) = engine else {
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "this agent cannot act".into(),
                    );
                };
                if r.route == Route::ActionGet {
                    return rest::action_status(&engine, &self.actions, &arg);
                }
                audit.vm = Some(arg.clone());
                let body = match self.read_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let Route::VmAction(verb) = r.route else {
                    return json_error(StatusCode::NOT_FOUND, "unknown route".into());
                };
                rest::act(
                    &engine,
                    &self.actions,
                    self.watchdog.as_ref(),
                    &arg,
                    verb,
                    &body,
                    audit,
                )
                .await
            }
            _ => {
                let body = match self.read_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                match engine {
                    Some(engine) => self.legacy(r.route, &engine, &body, audit).await,
                    None => json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "this agent cannot act".into(),
                    ),
                }
            }
        }
    }

    /// The body, at most `[api] max_body_bytes` (413 beyond) within `read_timeout_seconds`
    /// (408 beyond: a client trickling its body holds nothing for long).
    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, Resp> {
        self.read_body_max(req, self.api.max_body_bytes).await
    }

    async fn read_body_max(&self, req: Request<Incoming>, limit: usize) -> Result<Bytes, Resp> {
        let too_big = || {
            json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than the limit of {limit} bytes ([api] max_body_bytes)"
                ),
            )
        };
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_big());
        }
        let timeout = std::time::Duration::from_secs_f64(self.api.read_timeout_seconds);
        match tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await {
            Err(_) => Err(json_error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s ([api] read_timeout_seconds)",
                    self.api.read_timeout_seconds
                ),
            )),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(too_big())
            }
            Ok(Err(e)) => Err(json_error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )),
            Ok(Ok(b)) => Ok(b.to_bytes()),
        }
    }
}

/// Marks the end of a scrape's collection when dropped, also when the scrape is cancelled.
struct Collecting<'a>(&'a std::sync::Mutex<Option<watch::Receiver<Option<Arc<Registry>>>>>);

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// What the audit line of a request says beyond its route.
#[derive(Default)]
pub(crate) struct Audit {
    pub who: Option<Identity>,
    /// Set by handlers whose route changes something only for some bodies (watchdog reset,
    /// peer lock steps).
    pub mutating: bool,
    pub vm: Option<String>,
    pub action_id: Option<String>,
    pub result: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Metrics,
    Healthz,
    Landing,
    /// `POST /v1/action` (ctl, synchronous).
    Action,
    /// `POST /v1/peer` (other agents).
    Peer,
    /// `POST /v1/status` (ctl status, and peers).
    Status,
    /// `POST /v1/watchdog`.
    Watchdog,
    /// `GET /v1/node`.
    Node,
    /// `GET /v1/vms`.
    Vms,
    /// `GET /v1/vms/{vm}`.
    Vm,
    /// `GET /v1/cluster/vms`.
    ClusterVms,
    /// `POST /v1/vms/{vm}/VERB`.
    VmAction(Verb),
    /// `GET /v1/actions/{id}`.
    ActionGet,
    /// `POST /v1/alertmanager`.
    Alertmanager,
    NotFound,
}

impl Route {
    fn needs_engine(self) -> bool {
        matches!(
            self,
            Route::Action
                | Route::Peer
                | Route::Status
                | Route::Watchdog
                | Route::VmAction(_)
                | Route::ActionGet
                | Route::Alertmanager
        )
    }
}

pub(crate) struct Routed {
    pub route: Route,
    /// The path as documented (`/v1/vms/{vm}`): the `route` label and the audit's route.
    pub template: &'static str,
    pub methods: &'static [Method],
    pub need: Need,
    /// Every request to it asks for a change (audited).
    pub mutating: bool,
    /// The `{vm}` or `{id}` of the path, decoded and validated; `Err(why)`: a 400.
    pub arg: Option<Result<String, String>>,
}

const GET: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];

pub(crate) fn classify(_method: &Method, path: &str, api: &ApiConfig) -> Routed {
    let open_or = |open: bool| if open { Need::Open } else { Need::Read };
    let r = |route, template, methods, need, mutating| Routed {
        route,
        template,
        methods,
        need,
        mutating,
        arg: None,
    };
    let with = |mut x: Routed, arg: Result<String, String>| {
        x.arg = Some(arg);
        x
    };
    match path {
        "/metrics" => {
            return r(
                Route::Metrics,
                "/metrics",
                GET,
                open_or(api.open_metrics),
                false,
            )
        }
        "/healthz" => {
            return r(
                Route::Healthz,
                "/healthz",
                GET,
                open_or(api.open_healthz),
                false,
            )
        }
        "/" => return r(Route::Landing, "/", GET, open_or(api.open_healthz), false),
        "/v1/action" => return r(Route::Action, "/v1/action", POST, Need::Operate, true),
        "/v1/peer" => return r(Route::Peer, "/v1/peer", POST, Need::Peer, false),
        "/v1/status" => return r(Route::Status, "/v1/status", POST, Need::Read, false),
        "/v1/watchdog" => return r(Route::Watchdog, "/v1/watchdog", POST, Need::Read, false),
        "/v1/node" => return r(Route::Node, "/v1/node", GET, Need::Read, false),
        "/v1/vms" => return r(Route::Vms, "/v1/vms", GET, Need::Read, false),
        "/v1/cluster/vms" => {
            return r(Route::ClusterVms, "/v1/cluster/vms", GET, Need::Read, false)
        }
        "/v1/alertmanager" => {
            return r(
                Route::Alertmanager,
                "/v1/alertmanager",
                POST,
                Need::Alertmanager,
                true,
            )
        }
        _ => {}
    }
    let segs: Vec<&str> = path.split('/').collect();
    match segs.as_slice() {
        ["", "v1", "vms", vm] => with(
            r(Route::Vm, "/v1/vms/{vm}", GET, Need::Read, false),
            vm_arg(vm),
        ),
        ["", "v1", "vms", vm, verb] => match Verb::parse(verb) {
            Some(v) => with(
                r(Route::VmAction(v), v.template(), POST, Need::Operate, true),
                vm_arg(vm),
            ),
            None => r(Route::NotFound, "other", GET, Need::Open, false),
        },
        ["", "v1", "actions", id] => with(
            r(Route::ActionGet, "/v1/actions/{id}", GET, Need::Read, false),
            id_arg(id),
        ),
        _ => r(Route::NotFound, "other", GET, Need::Open, false),
    }
}

/// Every route this agent serves: (method, template, role needed). docs/openapi.yaml documents
/// exactly these (tests/api_openapi.rs); a unit test below keeps them true to `classify`.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/metrics", "open"),
    ("get", "/healthz", "open"),
    ("get", "/", "open"),
    ("get", "/v1/node", "read"),
    ("get", "/v1/vms", "read"),
    ("get", "/v1/vms/{vm}", "read"),
    ("get", "/v1/cluster/vms", "read"),
    ("post", "/v1/vms/{vm}/start", "operate"),
    ("post", "/v1/vms/{vm}/stop", "operate"),
    ("post", "/v1/vms/{vm}/restart", "operate"),
    ("post", "/v1/vms/{vm}/resume", "operate"),
    ("post", "/v1/vms/{vm}/migrate", "operate"),
    ("post", "/v1/vms/{vm}/reset", "operate"),
    ("post", "/v1/vms/{vm}/create", "operate"),
    ("post", "/v1/vms/{vm}/grow", "operate"),
    ("post", "/v1/vms/{vm}/activate-disks", "operate"),
    ("post", "/v1/vms/{vm}/deactivate-disks", "operate"),
    ("post", "/v1/vms/{vm}/remove", "operate"),
    ("get", "/v1/actions/{id}", "read"),
    ("post", "/v1/action", "operate"),
    ("post", "/v1/status", "read"),
    ("post", "/v1/watchdog", "read"),
    ("post", "/v1/peer", "peer"),
    ("post", "/v1/alertmanager", "alertmanager"),
];

/// A `{vm}` path segment: percent-decoded, UTF-8, and a valid VM name.
fn vm_arg(seg: &str) -> Result<String, String> {
    let vm = rest::decode_segment(seg)
        .ok_or_else(|| "the VM name in the path is not valid percent-encoded UTF-8".to_string())?;
    validate_name(NameKind::Vm, &vm).map_err(|e| e.to_string())?;
    Ok(vm)
}

/// An `{id}` path segment: what `new_action_id` makes (a VM name, `-`, the action, `-`, digits).
fn id_arg(seg: &str) -> Result<String, String> {
    let id = rest::decode_segment(seg).ok_or_else(|| {
        "the action id in the path is not valid percent-encoded UTF-8".to_string()
    })?;
    if id.is_empty()
        || id.len() > 200
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
    {
        return Err(format!(
            "action id {:?}: expected VM-ACTION-MILLISECONDS (letters, digits, + _ . -)",
            truncate(&id, 100)
        ));
    }
    Ok(id)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The `/metrics` answer in the negotiated format and encoding. Writing and gzip run on the
/// blocking pool: for thousands of series they are milliseconds of CPU that would otherwise
/// stall every other connection served by this runtime thread.
async fn metrics_response(reg: Arc<Registry>, format: Format, gzip: bool) -> Response<Full<Bytes>> {
    let work = move || -> std::io::Result<Bytes> {
        if !gzip {
            return Ok(Bytes::from(reg.to_text(format)));
        }
        // Fastest level: on a LAN the scrape is bound by CPU (ours to compress, Prometheus' to
        // inflate), not bytes; level 1 already shrinks this repetitive text ~10x. The text is
        // written into the encoder in chunks and never exists whole.
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(reg.size_hint() / 8),
            flate2::Compression::fast(),
        );
        reg.write(format, &mut enc)?;
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
    /// The routes `vmwarden ctl` and older agents call: `POST /v1/action`, `/v1/peer`,
    /// `/v1/status`, `/v1/watchdog`; JSON in and out, strictly parsed.
    async fn legacy(
        &self,
        route: Route,
        engine: &Arc<Engine>,
        body: &[u8],
        audit: &mut Audit,
    ) -> Resp {
        let out = match route {
            Route::Action => match parse::<ActionRequest>(body) {
                Ok(r) => {
                    audit.vm = Some(r.vm.clone());
                    if let Err(e) = validate_name(NameKind::Vm, &r.vm) {
                        return json_error(StatusCode::BAD_REQUEST, e.to_string());
                    }
                    let rep = engine.run(r).await;
                    audit.action_id = Some(rep.id.clone()).filter(|i| !i.is_empty());
                    audit.result = Some(rep.result.clone());
                    serde_json::to_vec(&rep)
                }
                Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
            },
            Route::Peer => match parse::<PeerRequest>(body) {
                Ok(r) => {
                    audit.mutating = r.op != crate::api::peer::PeerOp::Status;
                    audit.vm = Some(r.vm.clone());
                    audit.action_id = Some(r.action_id.clone()).filter(|i| !i.is_empty());
                    if let Err(e) = validate_name(NameKind::Vm, &r.vm) {
                        return json_error(StatusCode::BAD_REQUEST, e.to_string());
                    }
                    let rep = engine.handle_peer(r).await;
                    audit.result = Some(if rep.ok { "ok" } else { "refused" }.into());
                    serde_json::to_vec(&rep)
                }
                Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
            },
            Route::Status => match parse::<StatusRequest>(body) {
                Ok(r) => {
                    if let Err(e) = validate_name(NameKind::Vm, &r.vm) {
                        return json_error(StatusCode::BAD_REQUEST, e.to_string());
                    }
                    serde_json::to_vec(&engine.cluster_status(&r.vm).await)
                }
                Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
            },
            Route::Watchdog => match parse::<WatchdogRequest>(body) {
                Ok(r) => {
                    if r.op == "reset" {
                        audit.mutating = true;
                        audit.vm = r.vm.clone();
                        if !audit
                            .who
                            .as_ref()
                            .is_some_and(|w| Need::Operate.allows(w.role))
                        {
                            return json_error(
                                StatusCode::FORBIDDEN,
                                "a watchdog reset needs a token with the role operate".into(),
                            );
                        }
                    }
                    if let Some(vm) = &r.vm {
                        if let Err(e) = validate_name(NameKind::Vm, vm) {
                            return json_error(StatusCode::BAD_REQUEST, e.to_string());
                        }
                    }
                    let rep = self.watchdog_call(r);
                    audit.result = Some(if rep.ok { "ok" } else { "refused" }.into());
                    serde_json::to_vec(&rep)
                }
                Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
            },
            _ => return json_error(StatusCode::NOT_FOUND, "unknown API path".into()),
        };
        match out {
            Ok(json) => json_response(StatusCode::OK, json),
            Err(e) => json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the answer: {e}"),
            ),
        }
    }
}

/// Strict JSON: a malformed body, a wrong type or an unknown field is a 400 naming it.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("bad JSON request: {e}"))
}

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) fn json_response(status: StatusCode, json: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(json)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"error": message}` with `status`.
pub(crate) fn json_error(status: StatusCode, message: String) -> Resp {
    let body = serde_json::json!({ "error": message }).to_string();
    json_response(status, body.into_bytes())
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub vm: String,
}

/// `POST /v1/watchdog`: `{"op": "status"}` (every VM) or `{"op": "reset", "vm": "VM"}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
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

/// Serve `listener` until `shutdown` resolves, over TLS with `tls`: at most `[api]
/// max_connections` at once and `max_connections_per_source` from one address (more are closed
/// at once); the TLS handshake and then each
/// request's headers within `[api] read_timeout_seconds`. A failed handshake (plain HTTP to a TLS
/// listener, an untrusted client certificate) closes the connection; nothing is served on it.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(server.api.max_connections));
    let per_source = Arc::new(crate::api::conns::PerSource::default());
    let timeout = std::time::Duration::from_secs_f64(server.api.read_timeout_seconds);
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
        let limit = server.api.max_connections_per_source;
        let Some(source_slot) = crate::api::conns::PerSource::take(&per_source, peer.ip(), limit)
        else {
            tracing::warn!(%peer, "too many connections from this address ([api] max_connections_per_source): closed");
            drop(stream);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections ([api] max_connections): closed");
            drop(stream);
            continue;
        };
        let server = server.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slots = (slot, source_slot);
            match tls {
                None => serve_io(TokioIo::new(stream), server, peer, timeout).await,
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_io(TokioIo::new(s), server, peer, timeout).await,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, "TLS handshake failed (plain HTTP, or an untrusted certificate?): {e}");
                        }
                        Err(_) => tracing::info!(%peer, "TLS handshake did not finish in time"),
                    }
                }
            }
        });
    }
}

async fn serve_io<I>(io: I, server: Arc<Server>, peer: SocketAddr, timeout: std::time::Duration)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(server.handle(req, peer).await) }
    });
    if let Err(e) = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(io, svc)
        .await
    {
        tracing::debug!(%peer, "connection ended with an error: {e}");
    }
}

pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_is_what_classify_does() {
        let api = crate::config::Config::default_config().unwrap().api;
        for (method, template, role) in ROUTES {
            let path = template
                .replace("{vm}", "vm1")
                .replace("{id}", "vm1-start-1");
            let r = classify(&Method::GET, &path, &api);
            assert_eq!(r.template, *template, "{path}");
            assert_ne!(r.route, Route::NotFound, "{path}");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            assert!(r.methods.contains(&m), "{path}: {method}");
            let need = match r.need {
                Need::Open => "open",
                Need::Read => "read",
                Need::Operate => "operate",
                Need::Alertmanager => "alertmanager",
                Need::Peer => "peer",
            };
            assert_eq!(need, *role, "{path}");
        }
        assert_eq!(
            classify(&Method::GET, "/v1/vms/a/explode", &api).route,
            Route::NotFound
        );
        assert_eq!(
            classify(&Method::GET, "/v1/nothing", &api).template,
            "other"
        );
        assert!(matches!(
            classify(&Method::GET, "/v1/vms/%2e%2e", &api).arg,
            Some(Err(_))
        ));
    }
}
