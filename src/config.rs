//! Configuration: one TOML file layered over the defaults embedded in the binary
//! (`config/vmwarden.toml`), so the agent runs with no file at all. Unknown keys are errors.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The embedded default configuration, also the documented example.
pub const DEFAULT_TOML: &str = include_str!("../config/vmwarden.toml");

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    pub drbd: DrbdConfig,
    pub lvm: LvmConfig,
    pub sanlock: SanlockConfig,
    pub libvirt: LibvirtConfig,
    pub lock: LockConfig,
    pub cluster: ClusterConfig,
    pub actions: ActionsConfig,
    pub lifecycle: LifecycleConfig,
    pub watchdog: WatchdogConfig,
    pub notify: NotifyConfig,
    pub api: ApiConfig,
    pub alertmanager: AlertmanagerConfig,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub listen: String,
    pub collector_timeout_seconds: f64,
    pub openmetrics: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrbdConfig {
    pub enabled: bool,
    pub proc_path: String,
    pub drbdsetup: String,
    pub split_brain_dir: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LvmConfig {
    pub enabled: bool,
    pub lvm: String,
    pub lvmlockctl: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SanlockConfig {
    pub enabled: bool,
    pub sanlock: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    pub enabled: bool,
    pub uri: String,
}

/// `[lock]`: the cluster lock on VM disks (src/lock/, docs/locking.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    pub backend: String,
    pub command_timeout_seconds: f64,
    pub lvchange_extra_args: Vec<String>,
    pub convert_retry_attempts: u32,
    pub convert_retry_total_seconds: f64,
    pub sanlock: LockSanlockConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockSanlockConfig {
    pub lockspace: String,
    pub lease_path: String,
    pub leases: Vec<LeaseSlot>,
    pub holder: String,
}

/// One VM's lease offset in `lease_path`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeaseSlot {
    pub vm: String,
    pub offset: u64,
}

/// `[cluster]`: this node, its peers, and how agents trust each other.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub node: String,
    pub host_id: u64,
    pub secret_file: String,
    pub state_dir: String,
    pub peers: Vec<Peer>,
}

/// Another node of the cluster: its agent and its libvirtd, as this node reaches them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    pub url: String,
    pub libvirt_uri: String,
    #[serde(default)]
    pub migrate_uri: String,
    /// Its sanlock host_id (lvmlockd's or the lease lockspace's), so a refusal can name it.
    #[serde(default)]
    pub host_id: u64,
}

/// `[actions]`: start, stop, restart, migrate (src/actions/).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    pub virsh: String,
    pub virsh_timeout_seconds: f64,
    pub shutdown_timeout_seconds: f64,
    pub migrate_timeout_seconds: f64,
    pub migrate_extra_args: Vec<String>,
    pub qemu_pid_dir: String,
    pub peer_timeout_seconds: f64,
}

/// `[lifecycle]`: create, grow, disks activate/deactivate, remove (src/actions/lifecycle/).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// The shared VG new VMs' disks go in when `ctl create` names none.
    pub vg: String,
    /// Lease backend without LVM: new VMs' disks are raw files `DIR/VM.raw` here (shared storage).
    pub disk_dir: String,
    pub qemu_img: String,
    pub kpartx: String,
    /// `qemu-img convert` of `--from-image` gets this long.
    pub image_copy_timeout_seconds: f64,
    /// `vmwarden check` reports disks activated for maintenance longer than this.
    pub maintenance_warn_seconds: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    pub enabled: bool,
    /// "running": a running domain without intent is adopted as "should run"; "none": only VMs
    /// whose intent vmwarden recorded (started or stopped through it).
    pub adopt: String,
    pub exclude: Vec<String>,
    pub user_shutdown: bool,
    pub reconcile_seconds: f64,
    pub max_attempts: u32,
    pub window_seconds: f64,
    pub backoff_initial_seconds: f64,
    pub backoff_max_seconds: f64,
    pub stable_seconds: f64,
    /// A VM qemu paused on a disk I/O error is resumed once its storage path is healthy again
    /// (policy.rs `decide_paused_io`); off: left paused and alerted.
    pub resume_after_io_error: bool,
}

/// `[notify]`: how the agent tells people about VMs it restarted or gave up on (src/notify/).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub email: EmailConfig,
}

/// `[notify.email]`: SMTP submission with lettre. The password is in `password_file`, never here.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub enabled: bool,
    pub server: String,
    pub port: u16,
    /// "starttls", "tls" (implicit TLS, e.g. port 465) or "none" (loopback relays only).
    pub tls: String,
    pub username: String,
    pub password_file: String,
    /// PEM file of a private CA the server's certificate chains to ("": public roots only).
    pub ca_file: String,
    pub from: String,
    pub to: Vec<String>,
    pub min_interval_seconds: f64,
    pub timeout_seconds: f64,
    pub retry_initial_seconds: f64,
    pub retry_max_seconds: f64,
    pub retry_for_seconds: f64,
    pub queue: usize,
}

/// `[api]`: who may call the agent's HTTP API (src/api/, docs/api.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Named bearer tokens, each in its own file (0600), each with one role.
    pub tokens: Vec<TokenConfig>,
    /// The token `vmwarden ctl` sends ("": the cluster secret).
    pub token_file: String,
    /// `/metrics` answered without a token.
    pub open_metrics: bool,
    /// `/healthz` (and the landing page `/`) answered without a token.
    pub open_healthz: bool,
    pub max_body_bytes: usize,
    pub read_timeout_seconds: f64,
    pub auth_failures_per_minute: u32,
    pub max_connections: usize,
    /// At most this many of them from one source address.
    pub max_connections_per_source: usize,
}

/// `[tls]`: TLS of the agent's listener and of its calls to peers (src/api/tls.rs).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and key of this agent: the listener speaks TLS when both are set;
    /// also the client certificate it shows peers over https://.
    pub cert_file: String,
    pub key_file: String,
    /// PEM CA(s) client certificates must chain to (mutual TLS); "": no client certificate asked.
    pub client_ca_file: String,
    /// PEM CA(s) the peers' (and, for `ctl`, this agent's) certificates must chain to.
    pub ca_file: String,
}

/// `[alertmanager]`: the webhook `POST /v1/alertmanager` and its remediation rules.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub rules: Vec<RemediationRule>,
    pub max_body_bytes: usize,
}

/// A firing alert whose `alertname` and `matchers` match runs `action` on the VM named by its
/// label `vm_label`, at most once per alert (fingerprint) per `cooldown_seconds`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemediationRule {
    pub name: String,
    pub alertname: String,
    #[serde(default)]
    pub matchers: std::collections::BTreeMap<String, String>,
    /// start, stop, restart, migrate (with `to`), reset.
    pub action: String,
    #[serde(default = "default_vm_label")]
    pub vm_label: String,
    #[serde(default)]
    pub to: String,
    #[serde(default = "default_cooldown")]
    pub cooldown_seconds: f64,
    #[serde(default)]
    pub dry_run: bool,
}

fn default_vm_label() -> String {
    "vm".into()
}

fn default_cooldown() -> f64 {
    600.0
}

/// One named token: `{ name = "ops", role = "operate", file = "/etc/vmwarden/tokens/ops" }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: String,
    pub file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// The embedded defaults as a TOML table, parsed once per process: every config load overlays a
/// copy of it. (Parsing the 12 KB of defaults was two thirds of a load's time — the fuzz target
/// `config` ran at a few hundred inputs per second because of it.)
fn default_table() -> &'static Result<toml::Table, String> {
    static TABLE: std::sync::OnceLock<Result<toml::Table, String>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        DEFAULT_TOML
            .parse()
            .map_err(|e: toml::de::Error| e.to_string())
    })
}

impl Config {
    /// The embedded defaults.
    pub fn default_config() -> Result<Config, ConfigError> {
        Self::from_toml_str("", "(defaults)")
    }

    /// Defaults overlaid with `text` (the content of `origin`, for error messages).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let mut base = default_table()
            .clone()
            .map_err(|e| invalid(format!("embedded defaults: {e}")))?;
        let over: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        merge(&mut base, over, "").map_err(invalid)?;
        let cfg: Config = toml::Value::Table(base)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Self::default_config(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.display().to_string(),
                    source: e,
                })?;
                Self::from_toml_str(&text, &p.display().to_string())
            }
        }
    }

    /// The lockspace of the per-VM leases when they are the VMs' locks (`[lock] backend = "sanlock"`).
    pub fn lease_lockspace(&self) -> Option<String> {
        (self.lock.backend == "sanlock").then(|| self.lock.sanlock.lockspace.clone())
    }

    fn validate(&self) -> Result<(), String> {
        let l = &self.lifecycle;
        if !l.vg.is_empty() {
            crate::lock::validate_name(crate::lock::NameKind::Vg, &l.vg)
                .map_err(|e| format!("lifecycle.vg: {e}"))?;
        }
        if !l.disk_dir.is_empty() && (!l.disk_dir.starts_with('/') || l.disk_dir.contains(':')) {
            return Err(format!(
                "lifecycle.disk_dir = {:?}: must be an absolute path without ':'",
                l.disk_dir
            ));
        }
        for (k, v) in [
            ("image_copy_timeout_seconds", l.image_copy_timeout_seconds),
            ("maintenance_warn_seconds", l.maintenance_warn_seconds),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "lifecycle.{k} = {v}: must be a positive number of seconds"
                ));
            }
        }
        let t = self.agent.collector_timeout_seconds;
        if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
            return Err(format!(
                "agent.collector_timeout_seconds = {t}: must be a number of seconds in (0, 3600]"
            ));
        }
        if self.agent.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "agent.listen = {:?}: expected ADDRESS:PORT such as \"0.0.0.0:10177\" or \"[::1]:10177\"",
                self.agent.listen
            ));
        }
        for (key, cmd) in [
            ("drbd.drbdsetup", &self.drbd.drbdsetup),
            ("lvm.lvm", &self.lvm.lvm),
            ("lvm.lvmlockctl", &self.lvm.lvmlockctl),
            ("sanlock.sanlock", &self.sanlock.sanlock),
            ("actions.virsh", &self.actions.virsh),
        ] {
            if cmd.trim().is_empty() || cmd.contains(char::is_whitespace) {
                return Err(format!(
                    "{key} = {cmd:?}: a command is one program name or absolute path, without spaces or arguments"
                ));
            }
        }
        if !self.drbd.split_brain_dir.starts_with('/') {
            return Err(format!(
                "drbd.split_brain_dir = {:?}: must be an absolute path",
                self.drbd.split_brain_dir
            ));
        }
        self.validate_lock()?;
        self.validate_watchdog()?;
        self.validate_cluster()?;
        self.validate_notify()?;
        self.validate_api()?;
        self.validate_alertmanager()?;
        self.validate_tls()
    }

    fn validate_tls(&self) -> Result<(), String> {
        let t = &self.tls;
        for (key, path) in [
            ("cert_file", &t.cert_file),
            ("key_file", &t.key_file),
            ("client_ca_file", &t.client_ca_file),
            ("ca_file", &t.ca_file),
        ] {
            if !path.is_empty() && !path.starts_with('/') {
                return Err(format!(
                    "tls.{key} = {path:?}: must be an absolute path (or \"\" for none)"
                ));
            }
        }
        if t.cert_file.is_empty() != t.key_file.is_empty() {
            return Err("tls: cert_file and key_file go together (both set for TLS, both \"\" for plain HTTP)".into());
        }
        if !t.client_ca_file.is_empty() && t.cert_file.is_empty() {
            return Err(
                "tls.client_ca_file (mutual TLS) needs the listener's cert_file and key_file"
                    .into(),
            );
        }
        if self
            .cluster
            .peers
            .iter()
            .any(|p| p.url.starts_with("https://"))
            && t.ca_file.is_empty()
        {
            return Err("tls.ca_file: a peer is reached over https:// — name the CA its certificate chains to".into());
        }
        Ok(())
    }

    fn validate_alertmanager(&self) -> Result<(), String> {
        let a = &self.alertmanager;
        if !(1024..=64 << 20).contains(&a.max_body_bytes) {
            return Err(format!(
                "alertmanager.max_body_bytes = {}: must be in [1024, 67108864]",
                a.max_body_bytes
            ));
        }
        let mut names = std::collections::HashSet::new();
        for r in &a.rules {
            let at = format!("alertmanager.rules: {:?}", r.name);
            if r.name.is_empty() || r.name.len() > 64 || !names.insert(r.name.as_str()) {
                return Err(format!(
                    "{at}: each rule needs its own name of 1-64 characters"
                ));
            }
            if r.alertname.is_empty() || r.vm_label.is_empty() {
                return Err(format!("{at}: alertname and vm_label must not be empty"));
            }
            if !["start", "stop", "restart", "migrate", "reset"].contains(&r.action.as_str()) {
                return Err(format!(
                    "{at}: action = {:?}: expected start, stop, restart, migrate or reset",
                    r.action
                ));
            }
            if r.action == "migrate" {
                if self.peer(&r.to).is_none() {
                    return Err(format!(
                        "{at}: migrate needs `to`, a peer of [cluster] peers (got {:?})",
                        r.to
                    ));
                }
            } else if !r.to.is_empty() {
                return Err(format!("{at}: `to` is only for action = \"migrate\""));
            }
            let c = r.cooldown_seconds;
            if !(c.is_finite() && (0.0..=7.0 * 86400.0).contains(&c)) {
                return Err(format!(
                    "{at}: cooldown_seconds = {c}: must be a number of seconds in [0, 604800]"
                ));
            }
        }
        Ok(())
    }

    fn validate_api(&self) -> Result<(), String> {
        let a = &self.api;
        let mut names = std::collections::HashSet::new();
        for t in &a.tokens {
            if t.name.is_empty()
                || t.name.len() > 64
                || t.name.starts_with('-')
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!(
                    "api.tokens: name {:?}: a token name is 1-64 letters, digits, '-', '_' or '.'",
                    t.name
                ));
            }
            if !names.insert(t.name.as_str()) || t.name == "cluster-secret" {
                return Err(format!(
                    "api.tokens: {:?} is named twice (or is the reserved name \"cluster-secret\")",
                    t.name
                ));
            }
            if !["read", "operate", "alertmanager", "peer"].contains(&t.role.as_str()) {
                return Err(format!(
                    "api.tokens: {}: role = {:?}: expected \"read\", \"operate\", \"alertmanager\" or \"peer\"",
                    t.name, t.role
                ));
            }
            if !t.file.starts_with('/') {
                return Err(format!(
                    "api.tokens: {}: file = {:?}: must be an absolute path",
                    t.name, t.file
                ));
            }
        }
        if !a.token_file.is_empty() && !a.token_file.starts_with('/') {
            return Err(format!(
                "api.token_file = {:?}: must be an absolute path (or \"\" for the cluster secret)",
                a.token_file
            ));
        }
        if !(1024..=64 << 20).contains(&a.max_body_bytes) {
            return Err(format!(
                "api.max_body_bytes = {}: must be in [1024, 67108864]",
                a.max_body_bytes
            ));
        }
        let t = a.read_timeout_seconds;
        if !(t.is_finite() && t > 0.0 && t <= 300.0) {
            return Err(format!(
                "api.read_timeout_seconds = {t}: must be a number of seconds in (0, 300]"
            ));
        }
        if a.auth_failures_per_minute == 0 {
            return Err("api.auth_failures_per_minute = 0: must be at least 1".into());
        }
        if !(1..=100_000).contains(&a.max_connections) {
            return Err(format!(
                "api.max_connections = {}: must be in [1, 100000]",
                a.max_connections
            ));
        }
        if !(1..=a.max_connections).contains(&a.max_connections_per_source) {
            return Err(format!(
                "api.max_connections_per_source = {}: must be in [1, max_connections = {}]",
                a.max_connections_per_source, a.max_connections
            ));
        }
        Ok(())
    }

    fn validate_notify(&self) -> Result<(), String> {
        let e = &self.notify.email;
        for (key, t, lo, hi) in [
            (
                "min_interval_seconds",
                e.min_interval_seconds,
                0.0,
                7.0 * 86400.0,
            ),
            ("timeout_seconds", e.timeout_seconds, 0.001, 3600.0),
            (
                "retry_initial_seconds",
                e.retry_initial_seconds,
                0.001,
                86400.0,
            ),
            ("retry_max_seconds", e.retry_max_seconds, 0.001, 86400.0),
            (
                "retry_for_seconds",
                e.retry_for_seconds,
                0.0,
                30.0 * 86400.0,
            ),
        ] {
            if !(t.is_finite() && (lo..=hi).contains(&t)) {
                return Err(format!(
                    "notify.email.{key} = {t}: must be a number of seconds in [{lo}, {hi}]"
                ));
            }
        }
        if e.retry_max_seconds < e.retry_initial_seconds {
            return Err(format!(
                "notify.email.retry_max_seconds = {} is below retry_initial_seconds = {}",
                e.retry_max_seconds, e.retry_initial_seconds
            ));
        }
        if !(1..=100_000).contains(&e.queue) {
            return Err(format!(
                "notify.email.queue = {}: must be in [1, 100000]",
                e.queue
            ));
        }
        if !["starttls", "tls", "none"].contains(&e.tls.as_str()) {
            return Err(format!(
                "notify.email.tls = {:?}: expected \"starttls\", \"tls\" or \"none\"",
                e.tls
            ));
        }
        for (key, path) in [("password_file", &e.password_file), ("ca_file", &e.ca_file)] {
            if !path.is_empty() && !path.starts_with('/') {
                return Err(format!(
                    "notify.email.{key} = {path:?}: must be an absolute path (or \"\" for none)"
                ));
            }
        }
        if e.username.is_empty() != e.password_file.is_empty() {
            return Err(
                "notify.email: username and password_file go together (both set for AUTH, both \"\" for none)"
                    .into(),
            );
        }
        // An address that does not parse is refused even while disabled, so switching
        // `enabled` on later cannot be the moment a typo surfaces.
        for (key, addr) in std::iter::once(("from", &e.from)).chain(e.to.iter().map(|a| ("to", a)))
        {
            if !addr.is_empty() && addr.parse::<lettre::message::Mailbox>().is_err() {
                return Err(format!(
                    "notify.email.{key}: {addr:?} is not an email address (\"name@example.org\" or \"Name <name@example.org>\")"
                ));
            }
        }
        if !e.enabled {
            return Ok(());
        }
        if e.server.trim().is_empty() || e.server.contains(char::is_whitespace) {
            return Err(format!(
                "notify.email.server = {:?}: the SMTP server's host name or address is needed when enabled",
                e.server
            ));
        }
        if e.from.is_empty() || e.to.is_empty() || e.to.iter().any(String::is_empty) {
            return Err(
                "notify.email: `from` and at least one `to` address are needed when enabled".into(),
            );
        }
        // Plain SMTP carries the mail (and any password) readable by anyone on the path: only
        // a relay on this host may be reached without TLS.
        if e.tls == "none" && !is_loopback_host(&e.server) {
            return Err(format!(
                "notify.email.tls = \"none\" with server = {:?}: unencrypted SMTP is only allowed to a loopback address (127.0.0.1, ::1, localhost)",
                e.server
            ));
        }
        Ok(())
    }

    fn validate_watchdog(&self) -> Result<(), String> {
        let w = &self.watchdog;
        if w.adopt != "running" && w.adopt != "none" {
            return Err(format!(
                "watchdog.adopt = {:?}: expected \"running\" or \"none\"",
                w.adopt
            ));
        }
        for (key, t, max) in [
            ("watchdog.reconcile_seconds", w.reconcile_seconds, 10.0),
            ("watchdog.window_seconds", w.window_seconds, 7.0 * 86400.0),
            (
                "watchdog.backoff_initial_seconds",
                w.backoff_initial_seconds,
                3600.0,
            ),
            (
                "watchdog.backoff_max_seconds",
                w.backoff_max_seconds,
                86400.0,
            ),
            ("watchdog.stable_seconds", w.stable_seconds, 86400.0),
        ] {
            if !(t.is_finite() && t > 0.0 && t <= max) {
                return Err(format!(
                    "{key} = {t}: must be a number of seconds in (0, {max}]"
                ));
            }
        }
        if w.max_attempts == 0 || w.max_attempts > 100 {
            return Err(format!(
                "watchdog.max_attempts = {}: must be 1 to 100",
                w.max_attempts
            ));
        }
        for vm in &w.exclude {
            crate::lock::validate_name(crate::lock::NameKind::Vm, vm)
                .map_err(|e| format!("watchdog.exclude: {e}"))?;
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), String> {
        let a = &self.actions;
        for (key, t) in [
            ("actions.virsh_timeout_seconds", a.virsh_timeout_seconds),
            (
                "actions.shutdown_timeout_seconds",
                a.shutdown_timeout_seconds,
            ),
            ("actions.migrate_timeout_seconds", a.migrate_timeout_seconds),
            ("actions.peer_timeout_seconds", a.peer_timeout_seconds),
        ] {
            if !(t.is_finite() && t > 0.0 && t <= 86400.0) {
                return Err(format!(
                    "{key} = {t}: must be a number of seconds in (0, 86400]"
                ));
            }
        }
        let c = &self.cluster;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && !n.starts_with('-')
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !c.node.is_empty() && !name_ok(&c.node) {
            return Err(format!(
                "cluster.node = {:?}: a node name is 1-64 letters, digits, '-', '_' or '.'",
                c.node
            ));
        }
        let mut names = std::collections::HashSet::new();
        for p in &c.peers {
            if !name_ok(&p.name) {
                return Err(format!(
                    "cluster.peers: name {:?}: a node name is 1-64 letters, digits, '-', '_' or '.'",
                    p.name
                ));
            }
            if !names.insert(p.name.as_str()) || p.name == c.node {
                return Err(format!(
                    "cluster.peers: {:?} is named twice (or is this node itself)",
                    p.name
                ));
            }
            if !p.url.starts_with("http://") && !p.url.starts_with("https://") {
                return Err(format!(
                    "cluster.peers: {}: url = {:?}: expected http://HOST:PORT or https://HOST:PORT of its agent",
                    p.name, p.url
                ));
            }
            if p.libvirt_uri.is_empty() || p.libvirt_uri.starts_with('-') {
                return Err(format!(
                    "cluster.peers: {}: libvirt_uri = {:?}: expected e.g. qemu+tls://HOST/system",
                    p.name, p.libvirt_uri
                ));
            }
        }
        if !a.qemu_pid_dir.starts_with('/') || !c.state_dir.starts_with('/') {
            return Err("actions.qemu_pid_dir and cluster.state_dir must be absolute paths".into());
        }
        if a.migrate_extra_args.iter().any(|x| !x.starts_with("--")) {
            return Err(format!(
                "actions.migrate_extra_args = {:?}: only `--option` flags of `virsh migrate`",
                a.migrate_extra_args
            ));
        }
        Ok(())
    }

    /// This node's name: `[cluster] node`, or the host name.
    pub fn node_name(&self) -> String {
        if !self.cluster.node.is_empty() {
            return self.cluster.node.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string())
    }

    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.cluster.peers.iter().find(|p| p.name == name)
    }

    fn validate_lock(&self) -> Result<(), String> {
        let l = &self.lock;
        if !["lvmlockd", "sanlock"].contains(&l.backend.as_str()) {
            return Err(format!(
                "lock.backend = {:?}: expected \"lvmlockd\" or \"sanlock\"",
                l.backend
            ));
        }
        let t = l.command_timeout_seconds;
        if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
            return Err(format!(
                "lock.command_timeout_seconds = {t}: must be a number of seconds in (0, 3600]"
            ));
        }
        let t = l.convert_retry_total_seconds;
        if !(t.is_finite() && (0.0..=600.0).contains(&t)) {
            return Err(format!(
                "lock.convert_retry_total_seconds = {t}: must be a number of seconds in [0, 600]"
            ));
        }
        if !l.sanlock.holder.starts_with('/') {
            return Err(format!(
                "lock.sanlock.holder = {:?}: must be an absolute path (sanlock execs it without PATH lookup)",
                l.sanlock.holder
            ));
        }
        let mut seen = std::collections::HashMap::new();
        for s in &l.sanlock.leases {
            if s.offset == 0 || s.offset % 1_048_576 != 0 {
                return Err(format!(
                    "lock.sanlock.leases: vm {:?} offset {}: must be a non-zero multiple of 1048576 (offset 0 holds the lockspace)",
                    s.vm, s.offset
                ));
            }
            if let Some(other) = seen.insert(s.offset, &s.vm) {
                return Err(format!(
                    "lock.sanlock.leases: vms {other:?} and {:?} share offset {}: each VM needs its own slot",
                    s.vm, s.offset
                ));
            }
        }
        Ok(())
    }

    pub fn collector_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.agent.collector_timeout_seconds)
    }
}

/// Whether `host` names this machine's loopback without a DNS lookup (a resolver could say
/// anything for other names).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Overlay `over` onto `base`; a key `base` lacks is unknown and named in the error.
fn merge(base: &mut toml::Table, over: toml::Table, prefix: &str) -> Result<(), String> {
    for (k, v) in over {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (base.get_mut(&k), v) {
            (None, _) => return Err(format!("unknown key `{path}`")),
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &path)?,
            (Some(toml::Value::Table(_)), _) => {
                return Err(format!("`{path}` must be a table ([{path}])"))
            }
            (Some(slot), v) => *slot = v,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        let c = Config::default_config().unwrap();
        assert_eq!(c.drbd.proc_path, "/proc/drbd");
        assert_eq!(c.lvm.lvm, "lvm");
        assert_eq!(c.libvirt.uri, "qemu:///system");
        assert_eq!(c.agent.collector_timeout_seconds, 5.0);
    }

    #[test]
    fn file_overrides_only_what_it_names() {
        let c = Config::from_toml_str("[drbd]\nproc_path = \"/tmp/x\"\n", "t").unwrap();
        assert_eq!(c.drbd.proc_path, "/tmp/x");
        assert_eq!(c.drbd.drbdsetup, "drbdsetup");
        assert!(c.lvm.enabled);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml_str("[lvm]\nlvm_path = \"x\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lvm.lvm_path"), "{e}");
        let e = Config::from_toml_str("[nope]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`"), "{e}");
    }

    #[test]
    fn wrong_types_and_values_are_explained() {
        let e = Config::from_toml_str("[agent]\ncollector_timeout_seconds = \"5\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("collector_timeout_seconds"), "{e}");
        let e = Config::from_toml_str("[agent]\ncollector_timeout_seconds = -1.0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be"), "{e}");
        let e = Config::from_toml_str("[lvm]\nlvm = \"lvm --foo\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("without spaces"), "{e}");
        let e = Config::from_toml_str("[agent]\nlisten = \"localhost\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ADDRESS:PORT"), "{e}");
    }

    #[test]
    fn lock_section() {
        let c = Config::default_config().unwrap();
        assert_eq!(c.lock.backend, "lvmlockd");
        assert!(c.lock.lvchange_extra_args.is_empty());
        let c = Config::from_toml_str(
            "[lock]\nlvchange_extra_args = [\"--driverloaded\", \"n\"]\n[lock.sanlock]\nleases = [{ vm = \"vm1\", offset = 1048576 }]\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.lock.lvchange_extra_args, ["--driverloaded", "n"]);
        assert_eq!(c.lock.sanlock.leases[0].offset, 1_048_576);
        for (bad, want) in [
            ("[lock]\nbackend = \"dlm\"\n", "lock.backend"),
            ("[lock.sanlock]\nleases = [{ vm = \"a\", offset = 5 }]\n", "multiple"),
            (
                "[lock.sanlock]\nleases = [{ vm = \"a\", offset = 1048576 }, { vm = \"b\", offset = 1048576 }]\n",
                "share offset",
            ),
            ("[lock.sanlock]\nholder = \"tail\"\n", "absolute"),
            ("[lock.sanlock]\nleases = [{ vm = \"a\", offset = 1048576, x = 1 }]\n", "x"),
        ] {
            let e = Config::from_toml_str(bad, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn notify_email_section() {
        let c = Config::default_config().unwrap();
        let e = &c.notify.email;
        assert!(!e.enabled);
        assert_eq!((e.tls.as_str(), e.port), ("starttls", 587));
        assert_eq!(e.min_interval_seconds, 3600.0);
        let ok = "[notify.email]\nenabled = true\nserver = \"smtp.example.org\"\nfrom = \"vmwarden <vmw@example.org>\"\nto = [\"ops@example.org\"]\nusername = \"vmw\"\npassword_file = \"/etc/vmwarden/smtp.password\"\n";
        let c = Config::from_toml_str(ok, "t").unwrap();
        assert_eq!(c.notify.email.to, ["ops@example.org"]);
        let loopback_plain = "[notify.email]\nenabled = true\nserver = \"127.0.0.1\"\nport = 25\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n";
        assert!(Config::from_toml_str(loopback_plain, "t").is_ok());
        for (bad, want) in [
            ("[notify.email]\npassword = \"x\"\n", "notify.email.password"),
            ("[notify.email]\ntls = \"ssl\"\n", "notify.email.tls"),
            ("[notify.email]\nenabled = true\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n", "server"),
            ("[notify.email]\nenabled = true\nserver = \"smtp.example.org\"\nto = [\"d@e.f\"]\n", "`from`"),
            (
                "[notify.email]\nenabled = true\nserver = \"smtp.example.org\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n",
                "loopback",
            ),
            ("[notify.email]\nto = [\"not an address\"]\n", "not an email address"),
            ("[notify.email]\nusername = \"u\"\n", "go together"),
            ("[notify.email]\nusername = \"u\"\npassword_file = \"pw\"\n", "absolute"),
            ("[notify.email]\nmin_interval_seconds = -1\n", "min_interval_seconds"),
            ("[notify.email]\nretry_initial_seconds = 10\nretry_max_seconds = 1\n", "below"),
            ("[notify.email]\nqueue = 0\n", "queue"),
        ] {
            let e = Config::from_toml_str(bad, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn api_section() {
        let c = Config::default_config().unwrap();
        assert!(c.api.tokens.is_empty() && c.api.open_metrics && c.api.open_healthz);
        let ok = "[api]\ntokens = [{ name = \"ops\", role = \"operate\", file = \"/etc/vmwarden/ops\" }]\n";
        assert_eq!(
            Config::from_toml_str(ok, "t").unwrap().api.tokens[0].role,
            "operate"
        );
        for (bad, want) in [
            ("[api]\ntokens = [{ name = \"a\", role = \"admin\", file = \"/x\" }]\n", "role = \"admin\""),
            ("[api]\ntokens = [{ name = \"a b\", role = \"read\", file = \"/x\" }]\n", "token name"),
            ("[api]\ntokens = [{ name = \"a\", role = \"read\", file = \"x\" }]\n", "absolute"),
            (
                "[api]\ntokens = [{ name = \"a\", role = \"read\", file = \"/x\" }, { name = \"a\", role = \"peer\", file = \"/y\" }]\n",
                "named twice",
            ),
            ("[api]\ntokens = [{ name = \"cluster-secret\", role = \"read\", file = \"/x\" }]\n", "reserved"),
            ("[api]\ntokens = [{ name = \"a\", role = \"read\", file = \"/x\", token = \"t\" }]\n", "unknown field `token`"),
            ("[api]\ntoken = \"x\"\n", "api.token"),
            ("[api]\nmax_body_bytes = 10\n", "max_body_bytes"),
            ("[api]\nread_timeout_seconds = 0\n", "read_timeout_seconds"),
            ("[api]\nauth_failures_per_minute = 0\n", "auth_failures_per_minute"),
            ("[api]\nmax_connections_per_source = 0\n", "max_connections_per_source"),
            ("[api]\nmax_connections = 8\n", "max_connections_per_source = 64: must be in [1, max_connections = 8]"),
        ] {
            let e = Config::from_toml_str(bad, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn alertmanager_rules() {
        let ok = "[alertmanager]\nrules = [{ name = \"down\", alertname = \"VmDown\", action = \"start\" }]\n";
        let r = &Config::from_toml_str(ok, "t").unwrap().alertmanager.rules[0];
        assert_eq!(
            (r.vm_label.as_str(), r.cooldown_seconds, r.dry_run),
            ("vm", 600.0, false)
        );
        for (bad, want) in [
            ("[alertmanager]\nrules = [{ name = \"a\", alertname = \"X\", action = \"explode\" }]\n", "action = \"explode\""),
            ("[alertmanager]\nrules = [{ name = \"a\", alertname = \"X\", action = \"migrate\" }]\n", "a peer"),
            ("[alertmanager]\nrules = [{ name = \"a\", alertname = \"X\", action = \"stop\", to = \"n2\" }]\n", "only for"),
            ("[alertmanager]\nrules = [{ name = \"a\", alertname = \"\", action = \"stop\" }]\n", "must not be empty"),
            ("[alertmanager]\nrules = [{ name = \"a\", alertname = \"X\", action = \"stop\", cooldown_seconds = -1 }]\n", "cooldown_seconds"),
            ("[alertmanager]\nrules = [{ name = \"a\", alertname = \"X\", action = \"stop\", command = \"rm\" }]\n", "unknown field `command`"),
            (
                "[alertmanager]\nrules = [{ name = \"a\", alertname = \"X\", action = \"stop\" }, { name = \"a\", alertname = \"Y\", action = \"stop\" }]\n",
                "its own name",
            ),
        ] {
            let e = Config::from_toml_str(bad, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn tls_section() {
        let c = Config::default_config().unwrap();
        assert!(c.tls.cert_file.is_empty() && c.tls.ca_file.is_empty());
        for (bad, want) in [
            ("[tls]\ncert_file = \"/c.pem\"\n", "go together"),
            ("[tls]\nkey_file = \"k.pem\"\n", "absolute"),
            ("[tls]\nclient_ca_file = \"/ca.pem\"\n", "needs the listener"),
            (
                "[cluster]\npeers = [{ name = \"n2\", url = \"https://n2:10177\", libvirt_uri = \"qemu:///system\" }]\n",
                "tls.ca_file",
            ),
            (
                "[cluster]\npeers = [{ name = \"n2\", url = \"ftp://n2:10177\", libvirt_uri = \"qemu:///system\" }]\n",
                "https://HOST:PORT",
            ),
        ] {
            let e = Config::from_toml_str(bad, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let ok = "[tls]\nca_file = \"/ca.pem\"\n[cluster]\npeers = [{ name = \"n2\", url = \"https://n2:10177\", libvirt_uri = \"qemu:///system\" }]\n";
        assert!(Config::from_toml_str(ok, "t").is_ok());
    }
}
