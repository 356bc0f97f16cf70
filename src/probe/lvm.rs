//! LVM probe: volume groups (lock type, shared or local, size), logical volumes (size, activation)
//! and — for shared VGs — the lock mode this host holds on each LV, from lvmlockd.
//!
//! Sources, all through `exec`, run concurrently:
//! - one `lvm fullreport --reportformat json` ([`fullreport_cmd`]): VG, LV and segment
//!   sub-reports in one process and one metadata scan. Sizes in bytes (`--units b --nosuffix`),
//!   yes/no fields as 1/0 (`--binary`), `report/compact_output=0` so an operator's lvm.conf cannot
//!   drop empty columns, `--shared` so shared VGs show even where use_lvmlockd=0. The PV sub-reports
//!   are selected away (`-S pv_size<0`) because nothing here uses them.
//!   It runs with normal locking: on a shared VG lvm asks lvmlockd for the VG lock in shared mode,
//!   which never blocks other readers and is what lvm itself does for reports. `--nolocking` /
//!   `--readonly` would skip device-mapper and so lose activation state. Without lvmlockd, lvm
//!   reads shared VGs "without a lock" (warnings on stderr, exit 0). A report on dead storage can
//!   hang in the kernel: the collector timeout kills the process group (a task in D state stays
//!   until the I/O returns — nothing userspace can do about that).
//! - `lvmlockctl --info`: lvmlockd's lockspaces and locks (`VG`, `LS`, `LK GL|VG|LV` lines; the raw
//!   `info=` form of `--info --dump` is accepted too). Missing binary or lvmlockd not running is
//!   not a failure: the lock mode is then unknown.
//!
//! Why lvmlockd: for an LV active *shared*, `lvs` still reports it "active exclusively"; only the
//! lock manager knows ex from sh. So [`LvmSnapshot::lv_state`] says `Exclusive`/`Shared` only from
//! lvmlockd's answer, never from lvs (see the function for the full rule).
//!
//! Formats checked against lvm2 2.03.16 with real lvmlockd + sanlock (tests/fixtures/lvm/) and
//! lvm2's `daemons/lvmlockd/lvmlockctl.c`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::{cut_line_error, split_cut_line, Parsed, ProbeError};
use crate::config::LvmConfig;
use crate::exec::{Cmd, ExecError, Output};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LvmSnapshot {
    pub vgs: Vec<Vg>,
    pub lvs: Vec<Lv>,
    pub lockd: LockdStatus,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vg {
    pub name: String,
    pub uuid: String,
    /// `sanlock`, `dlm`, `idm` for shared VGs; "" (local) or `none`.
    pub lock_type: String,
    /// e.g. `1.0.0:lvmlock` for sanlock (version:name of the internal lock LV).
    pub lock_args: String,
    pub size_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub shared: bool,
    pub clustered: bool,
    pub attr: String,
}

impl Vg {
    /// Shared through lvmlockd (lock type sanlock/dlm/idm), whatever vg_shared says.
    pub fn is_shared(&self) -> bool {
        self.shared || matches!(self.lock_type.as_str(), "sanlock" | "dlm" | "idm")
    }
}

/// Whether device-mapper has the LV on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Activity {
    Active,
    #[default]
    Inactive,
    /// lvm could not ask device-mapper (lv_attr state `X`).
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lv {
    pub vg: String,
    pub name: String,
    /// For lvmlockd this is also the sanlock resource name in lockspace `lvm_<vg>`.
    pub uuid: String,
    pub size_bytes: Option<u64>,
    pub activity: Activity,
    pub active_locally: Option<bool>,
    pub active_remotely: Option<bool>,
    /// Beware: true for an LV active *shared* under lvmlockd too.
    pub active_exclusively: Option<bool>,
    /// e.g. `1.0.0:70254592` for sanlock (version:lease offset in the lock LV).
    pub lock_args: String,
    pub attr: String,
    pub path: String,
    pub dm_path: String,
    /// Comma-separated `PV(extent)` of all segments.
    pub devices: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Ex,
    Sh,
    Un,
}

impl LockMode {
    pub fn parse(s: &str) -> Option<LockMode> {
        match s {
            "ex" => Some(LockMode::Ex),
            "sh" => Some(LockMode::Sh),
            // nl = dlm's null lock: held for caching, grants nothing.
            "un" | "nl" => Some(LockMode::Un),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            LockMode::Ex => "ex",
            LockMode::Sh => "sh",
            LockMode::Un => "un",
        }
    }

    fn strength(&self) -> u8 {
        match self {
            LockMode::Un => 0,
            LockMode::Sh => 1,
            LockMode::Ex => 2,
        }
    }

    fn max(self, other: LockMode) -> LockMode {
        if other.strength() > self.strength() {
            other
        } else {
            self
        }
    }
}

/// One VG lvmlockd knows (its lockspace is started or being started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockdVg {
    pub vg_name: String,
    pub vg_uuid: String,
    pub lock_type: String,
    /// e.g. `lvm_vg1`.
    pub lockspace: String,
    pub vg_lock: Option<LockMode>,
    pub gl_lock: Option<LockMode>,
    /// (LV uuid, mode): every LV lvmlockd has a lock record for.
    pub lv_locks: Vec<(String, LockMode)>,
}

impl LockdVg {
    fn set_lv(&mut self, uuid: &str, mode: LockMode) {
        match self.lv_locks.iter_mut().find(|(u, _)| u == uuid) {
            Some((_, m)) => *m = m.max(mode),
            None => self.lv_locks.push((uuid.to_string(), mode)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockdInfo {
    pub vgs: Vec<LockdVg>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum LockdStatus {
    /// Not asked (parsers alone).
    #[default]
    NotQueried,
    /// lvmlockctl missing, lvmlockd not running or not answering: why.
    Unavailable(String),
    Up(LockdInfo),
}

/// What this host knows about the cluster lock of an LV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvLock {
    /// The VG is local: there is no cluster lock.
    NotShared,
    /// lvmlockd's answer (Un when it holds nothing for the LV, or the VG's lockspace is not started).
    Known(LockMode),
    /// Shared VG, but lvmlockd could not be asked.
    Unknown,
}

impl LvLock {
    pub fn as_str(&self) -> &'static str {
        match self {
            LvLock::NotShared => "none",
            LvLock::Known(m) => m.as_str(),
            LvLock::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvState {
    Exclusive,
    Shared,
    Local,
    Inactive,
}

impl LvState {
    pub const ALL: [&'static str; 4] = ["exclusive", "shared", "local", "inactive"];

    pub fn as_str(&self) -> &'static str {
        match self {
            LvState::Exclusive => "exclusive",
            LvState::Shared => "shared",
            LvState::Local => "local",
            LvState::Inactive => "inactive",
        }
    }
}

impl LvmSnapshot {
    pub fn vg(&self, name: &str) -> Option<&Vg> {
        self.vgs.iter().find(|v| v.name == name)
    }

    pub fn has_shared_vg(&self) -> bool {
        self.vgs.iter().any(Vg::is_shared)
    }

    /// The LV's cluster lock as far as this host knows.
    pub fn lv_lock(&self, lv: &Lv) -> LvLock {
        if !self.vg(&lv.vg).is_some_and(Vg::is_shared) {
            return LvLock::NotShared;
        }
        match &self.lockd {
            LockdStatus::Up(info) => {
                let mode = info
                    .vgs
                    .iter()
                    .find(|v| v.vg_name == lv.vg)
                    .and_then(|v| v.lv_locks.iter().find(|(u, _)| *u == lv.uuid))
                    .map(|(_, m)| *m)
                    .unwrap_or(LockMode::Un);
                LvLock::Known(mode)
            }
            LockdStatus::NotQueried | LockdStatus::Unavailable(_) => LvLock::Unknown,
        }
    }

    /// The exported state of an LV on this host:
    /// - `Exclusive` / `Shared`: this host holds the LV's lvmlockd lock in that mode (only ever
    ///   from lvmlockd — lvs cannot tell shared from exclusive);
    /// - `Local`: active here without a cluster lock vmwarden knows of: an LV of a local VG, or
    ///   of a shared VG when lvmlockd could not be asked (lock `unknown`) or holds no lock for it;
    /// - `Inactive`: not active here (or activity unknown) and no lock held.
    pub fn lv_state(&self, lv: &Lv) -> LvState {
        match self.lv_lock(lv) {
            LvLock::Known(LockMode::Ex) => LvState::Exclusive,
            LvLock::Known(LockMode::Sh) => LvState::Shared,
            LvLock::Known(LockMode::Un) | LvLock::NotShared | LvLock::Unknown => {
                if lv.activity == Activity::Active {
                    LvState::Local
                } else {
                    LvState::Inactive
                }
            }
        }
    }
}

/// The report command the probe runs (also used verbatim by scripts/capture-lvm-fixtures.sh).
pub fn fullreport_cmd(lvm: &str) -> Cmd {
    Cmd::new(lvm)
        .args([
            "fullreport",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "--binary",
            "--shared",
            "--config",
            "report { compact_output = 0 }",
            "--configreport",
            "vg",
            "-o",
            "vg_name,vg_uuid,vg_lock_type,vg_lock_args,vg_size,vg_free,vg_shared,vg_clustered,vg_attr",
            "--configreport",
            "lv",
            "-o",
            "vg_name,lv_name,lv_uuid,lv_size,lv_active,lv_active_locally,lv_active_remotely,lv_active_exclusively,lv_lock_args,lv_attr,lv_path,lv_dm_path",
            "--configreport",
            "pv",
            "-o",
            "pv_name",
            "-S",
            "pv_size<0",
            "--configreport",
            "pvseg",
            "-o",
            "pvseg_start",
            "-S",
            "pvseg_start<0",
            "--configreport",
            "seg",
            "-o",
            "lv_uuid,devices",
        ])
        // lvm warns about inherited descriptors on stderr; nothing leaks here, keep stderr useful.
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
}

/// A field as text: strings as they are, numbers and booleans (json_std) spelled out.
fn text_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

struct Row<'a> {
    obj: &'a serde_json::Map<String, Value>,
    what: String,
    errors: &'a mut Vec<String>,
}

impl Row<'_> {
    /// A text field; missing or of an odd type => "" and an error.
    fn text(&mut self, key: &str) -> String {
        match text_field(self.obj, key) {
            Some(s) => s,
            None => {
                let why = if self.obj.contains_key(key) {
                    "not text"
                } else {
                    "missing"
                };
                self.errors
                    .push(format!("lvm report: {}: field {key} {why}", self.what));
                String::new()
            }
        }
    }

    /// A text field that older or newer lvm may name differently.
    fn text_alt(&mut self, key: &str, alt: &str) -> String {
        match text_field(self.obj, key).or_else(|| text_field(self.obj, alt)) {
            Some(s) => s,
            None => self.text(key),
        }
    }

    /// A size in bytes; "" (lvm's "no value"), garbage or missing => None and an error.
    /// The probe asks for `--units b --nosuffix`; an lvm.conf or wrapper that overrides it gives
    /// sizes with units (`1.99g`, `<2.00g`) or bare fractions. A size with a unit is read as
    /// exact only when it is a whole number of that unit (`512.00m`); a rounded one (`1.99g`)
    /// or a fraction with no unit (`1.99`: of what?) is not exported: rounding down to 1 byte
    /// or guessing to the printed precision would be a confident wrong value.
    fn bytes(&mut self, key: &str) -> Option<u64> {
        let raw = text_field(self.obj, key);
        let parsed = raw.as_deref().map(str::trim).map(parse_size);
        match parsed {
            Some(Ok(n)) => Some(n),
            Some(Err(why)) => {
                self.errors.push(format!(
                    "lvm report: {}: {key} {:?} {why}; not exported (something overrides \
                     vmwarden's `--units b --nosuffix`: check lvm.conf report/units settings)",
                    self.what,
                    raw.unwrap_or_default()
                ));
                None
            }
            None => {
                self.errors.push(format!(
                    "lvm report: {}: {key} {}",
                    self.what,
                    if self.obj.contains_key(key) {
                        "is not text"
                    } else {
                        "missing"
                    }
                ));
                None
            }
        }
    }

    /// A yes/no field: 1/0 with --binary, the descriptive word or "" without. -1/unknown => None.
    fn flag(&mut self, key: &str) -> Option<bool> {
        match text_field(self.obj, key) {
            None => {
                self.errors
                    .push(format!("lvm report: {}: field {key} missing", self.what));
                None
            }
            Some(s) => match s.trim() {
                "-1" | "unknown" => None,
                "" | "0" | "false" | "no" => Some(false),
                _ => Some(true),
            },
        }
    }
}

/// An lvm size: plain bytes (`1073741824`, `1073741824B`) or a whole number of an lvm unit
/// (`512.00m`, `2g`; lowercase powers of 1024, uppercase of 1000, `s` sectors). `Err` says why not.
fn parse_size(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if let Ok(n) = s.strip_suffix(['B', 'b']).unwrap_or(s).parse::<u64>() {
        return Ok(n);
    }
    if s.starts_with(['<', '>']) {
        return Err("is rounded by lvm (`<`/`>`)");
    }
    let (num, mult): (&str, u64) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c {
                's' | 'S' => 512,
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                'p' => 1 << 50,
                'e' => 1 << 60,
                'K' => 1_000,
                'M' => 1_000_000,
                'G' => 1_000_000_000,
                'T' => 1_000_000_000_000,
                'P' => 1_000_000_000_000_000,
                'E' => 1_000_000_000_000_000_000,
                _ => return Err("has a unit lvm does not print"),
            };
            (&s[..i], m)
        }
        _ => {
            return Err(if s.parse::<f64>().is_ok() {
                "is a fraction without a unit (unit unknown)"
            } else {
                "is not a size"
            })
        }
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return Err("is not a size");
    }
    if frac.bytes().any(|c| c != b'0') {
        return Err("is rounded to lvm's printed precision");
    }
    int.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or("is out of range")
}

/// The JSON document in lvm's stdout, and the lines printed around it. lvm prints warnings on
/// stderr, but some versions and `--config` mistakes put them on stdout before (or after) the
/// report; they are not the report, and not a reason to lose it either: each is counted.
fn json_in_output(text: &str) -> Result<(Value, Vec<String>), String> {
    let mut noise = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('{') {
            break;
        }
        if !line.trim().is_empty() {
            noise.push(format!(
                "lvm report: printed before its JSON, ignored: `{}`",
                super::drbd::truncate(line.trim(), 120)
            ));
        }
        start += line.len();
    }
    let body = &text[start..];
    if body.is_empty() {
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        return Err(match first {
            Some(first) => format!(
                "lvm report is not JSON (no line starts a JSON object; it printed `{}`)",
                super::drbd::truncate(first, 120)
            ),
            None => "lvm report is empty".to_string(),
        });
    }
    let mut stream = serde_json::Deserializer::from_str(body).into_iter::<Value>();
    let doc = match stream.next() {
        Some(Ok(doc)) => doc,
        Some(Err(e)) => return Err(format!("lvm report is not JSON ({e})")),
        None => return Err("lvm report is empty".to_string()),
    };
    let rest = body[stream.byte_offset()..].trim();
    if !rest.is_empty() {
        noise.push(format!(
            "lvm report: printed after its JSON, ignored: `{}`",
            super::drbd::truncate(rest, 120)
        ));
    }
    Ok((doc, noise))
}

/// The VGs and LVs of a JSON report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LvmReport {
    pub vgs: Vec<Vg>,
    pub lvs: Vec<Lv>,
}

fn activity(active: &str, locally: Option<bool>, attr: &str) -> Activity {
    if locally == Some(true) || active.trim() == "active" {
        return Activity::Active;
    }
    // lv_attr character 5 is the device-mapper state.
    match attr.chars().nth(4) {
        Some('X') => Activity::Unknown,
        // active, suspended, snapshot/merge states, a mapped device with or without tables,
        // thin-pool check needed: a device exists on this host.
        Some('a' | 's' | 'I' | 'S' | 'm' | 'M' | 'd' | 'i' | 'c' | 'C') => Activity::Active,
        _ => Activity::Inactive,
    }
}

/// Parse `lvm fullreport --reportformat json` (lvs/vgs JSON with `vg`/`lv` sub-reports works
/// too). Err when the text is not an LVM JSON report at all; odd rows and fields are skipped and
/// reported in `errors`. Never panics.
pub fn parse_fullreport(text: &str) -> Result<Parsed<LvmReport>, String> {
    let (doc, mut errors) = json_in_output(text)?;
    let items = doc
        .get("report")
        .and_then(Value::as_array)
        .ok_or_else(|| "lvm report JSON has no \"report\" array".to_string())?;
    let mut rep = LvmReport::default();
    for (ii, item) in items.iter().enumerate() {
        let Some(item) = item.as_object() else {
            errors.push(format!("lvm report: report[{ii}] is not an object"));
            continue;
        };
        let rows = |key: &str, errors: &mut Vec<String>| -> Vec<&serde_json::Map<String, Value>> {
            match item.get(key) {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .filter_map(|(ri, r)| {
                        let o = r.as_object();
                        if o.is_none() {
                            errors.push(format!(
                                "lvm report: report[{ii}].{key}[{ri}] is not an object"
                            ));
                        }
                        o
                    })
                    .collect(),
                Some(_) => {
                    errors.push(format!("lvm report: report[{ii}].{key} is not an array"));
                    Vec::new()
                }
            }
        };
        let mut devices: HashMap<String, Vec<String>> = HashMap::new();
        for obj in rows("seg", &mut errors) {
            if let (Some(u), Some(d)) = (text_field(obj, "lv_uuid"), text_field(obj, "devices")) {
                if !d.is_empty() {
                    devices.entry(u).or_default().push(d);
                }
            }
        }
        for obj in rows("vg", &mut errors) {
            let Some(name) = text_field(obj, "vg_name").filter(|n| !n.is_empty()) else {
                errors.push(format!(
                    "lvm report: report[{ii}].vg row without vg_name skipped"
                ));
                continue;
            };
            // Shared or local decides every lock judgment: from vg_lock_type, else vg_shared,
            // else vg_attr's 6th character; with none of them the VG is skipped, never guessed
            // local.
            let attr_shared = text_field(obj, "vg_attr")
                .and_then(|a| a.chars().nth(5))
                .filter(|c| *c != '-')
                .map(|c| c == 's');
            if text_field(obj, "vg_lock_type").is_none()
                && text_field(obj, "vg_shared").is_none()
                && attr_shared.is_none()
            {
                errors.push(format!(
                    "lvm report: VG {name}: none of vg_lock_type, vg_shared, vg_attr; shared or \
                     local unknown, VG skipped"
                ));
                continue;
            }
            let mut r = Row {
                obj,
                what: format!("VG {name}"),
                errors: &mut errors,
            };
            let lock_type = r.text("vg_lock_type");
            let vg = Vg {
                uuid: r.text("vg_uuid"),
                lock_args: r.text("vg_lock_args"),
                size_bytes: r.bytes("vg_size"),
                free_bytes: r.bytes("vg_free"),
                shared: r.flag("vg_shared").or(attr_shared).unwrap_or(false),
                clustered: r.flag("vg_clustered").unwrap_or(false),
                attr: r.text("vg_attr"),
                lock_type,
                name,
            };
            rep.vgs.push(vg);
        }
        for obj in rows("lv", &mut errors) {
            let (Some(vg), Some(name)) = (
                text_field(obj, "vg_name").filter(|n| !n.is_empty()),
                text_field(obj, "lv_name").filter(|n| !n.is_empty()),
            ) else {
                errors.push(format!(
                    "lvm report: report[{ii}].lv row without vg_name/lv_name skipped"
                ));
                continue;
            };
            // Without its uuid the LV's lock cannot be found (it would read as unlocked), and
            // without any activity column it would read as inactive: skipped, not guessed.
            let no_activity = ["lv_active", "lv_active_locally", "lv_attr"]
                .iter()
                .all(|k| text_field(obj, k).is_none());
            if text_field(obj, "lv_uuid")
                .filter(|u| !u.is_empty())
                .is_none()
                || no_activity
            {
                errors.push(format!(
                    "lvm report: LV {vg}/{name}: {}; LV skipped",
                    if no_activity {
                        "none of lv_active, lv_active_locally, lv_attr (activation unknown)"
                    } else {
                        "no lv_uuid (its lock cannot be looked up)"
                    }
                ));
                continue;
            }
            let mut r = Row {
                obj,
                what: format!("LV {vg}/{name}"),
                errors: &mut errors,
            };
            let uuid = r.text("lv_uuid");
            let active = r.text("lv_active");
            let active_locally = r.flag("lv_active_locally");
            let attr = r.text("lv_attr");
            // lvs names the column lv_lockargs in its output (the -o name is lv_lock_args).
            let lock_args = r.text_alt("lv_lockargs", "lv_lock_args");
            let lv = Lv {
                size_bytes: r.bytes("lv_size"),
                activity: activity(&active, active_locally, &attr),
                active_locally,
                active_remotely: r.flag("lv_active_remotely"),
                active_exclusively: r.flag("lv_active_exclusively"),
                path: r.text("lv_path"),
                dm_path: r.text("lv_dm_path"),
                devices: devices.get(&uuid).map(|d| d.join(",")).unwrap_or_default(),
                lock_args,
                attr,
                uuid,
                vg,
                name,
            };
            rep.lvs.push(lv);
        }
    }
    Ok(Parsed { value: rep, errors })
}

/// `key=value` fields of a raw `info=` line.
fn kv(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

/// Parse `lvmlockctl --info` (formatted) or `lvmlockctl --info --dump` (raw `info=` lines).
/// Never panics; unreadable lines are skipped and reported.
pub fn parse_lockctl_info(text: &str) -> Parsed<LockdInfo> {
    let mut info = LockdInfo::default();
    let mut errors = Vec::new();
    // Raw form: the resource an `info=lk` line belongs to (type, name).
    let mut raw_r: Option<(String, String)> = None;
    // A cut last line (`LK LV e`) could hold a lock-mode prefix: skipped, not read as data.
    let (text, cut) = split_cut_line(text);
    if let Some(cut) = cut {
        errors.push(cut_line_error("lvmlockctl --info", cut));
    }
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let mut bad = |why: String| errors.push(format!("lvmlockctl line {lineno}: {why}"));
        // The first four fields are all any line kind uses: read in place, not collected.
        let mut words = line.split_whitespace();
        let f = [words.next(), words.next(), words.next(), words.next()];
        match f[0].unwrap_or("") {
            "VG" => {
                // VG <name> lock_type=<type> <uuid>
                let Some(vg_name) = f[1] else {
                    bad(format!("{line:?}: VG line without a name"));
                    continue;
                };
                info.vgs.push(LockdVg {
                    vg_name: vg_name.to_string(),
                    lock_type: f[2]
                        .and_then(|s| s.strip_prefix("lock_type="))
                        .unwrap_or("")
                        .to_string(),
                    vg_uuid: f[3].unwrap_or("").to_string(),
                    ..Default::default()
                });
            }
            "LS" => match (info.vgs.last_mut(), f[2]) {
                (Some(vg), Some(ls)) => vg.lockspace = ls.to_string(),
                _ => bad(format!("{line:?}: LS line outside a VG or without a name")),
            },
            "LK" => {
                // LK GL|VG <mode> ver N [pid P (name)]  /  LK LV <mode> <lv_uuid>
                let (Some(kind), Some(mode)) = (f[1], f[2]) else {
                    bad(format!("{line:?}: short LK line"));
                    continue;
                };
                let Some(mode) = LockMode::parse(mode) else {
                    bad(format!("{line:?}: unknown lock mode"));
                    continue;
                };
                let Some(vg) = info.vgs.last_mut() else {
                    bad(format!("{line:?}: LK line before any VG line"));
                    continue;
                };
                match kind {
                    "GL" => vg.gl_lock = Some(vg.gl_lock.map_or(mode, |m| m.max(mode))),
                    "VG" => vg.vg_lock = Some(vg.vg_lock.map_or(mode, |m| m.max(mode))),
                    "LV" => match f[3] {
                        Some(uuid) => vg.set_lv(uuid, mode),
                        None => bad(format!("{line:?}: LK LV line without an LV uuid")),
                    },
                    _ => bad(format!("{line:?}: unknown lock kind")),
                }
            }
            // Lock requests waiting, operations in progress, lines lvmlockctl itself could not
            // format, lvmlockctl's own format errors: nothing held, nothing to report.
            "LW" | "OP" | "UN" | "format_info_lk" | "format_info_r_action" => {}
            _ if line.starts_with("info=") => {
                let m = kv(line);
                match m.get("info").copied() {
                    Some("ls") => info.vgs.push(LockdVg {
                        vg_name: m.get("vg_name").copied().unwrap_or("").to_string(),
                        vg_uuid: m.get("vg_uuid").copied().unwrap_or("").to_string(),
                        lock_type: m.get("lm_type").copied().unwrap_or("").to_string(),
                        lockspace: m.get("ls_name").copied().unwrap_or("").to_string(),
                        ..Default::default()
                    }),
                    Some("r") => {
                        let (Some(t), Some(name)) = (m.get("type"), m.get("name")) else {
                            bad(format!("{line:?}: info=r without type/name"));
                            raw_r = None;
                            continue;
                        };
                        raw_r = Some((t.to_string(), name.to_string()));
                        // Unlocked resources have no lk lines: record them now.
                        if m.get("mode") == Some(&"un") {
                            if let Some(vg) = info.vgs.last_mut() {
                                match *t {
                                    "lv" => vg.set_lv(name, LockMode::Un),
                                    "vg" => vg.vg_lock = Some(vg.vg_lock.unwrap_or(LockMode::Un)),
                                    "gl" => vg.gl_lock = Some(vg.gl_lock.unwrap_or(LockMode::Un)),
                                    _ => {}
                                }
                            }
                        }
                    }
                    Some("lk") => {
                        let Some(mode) = m.get("mode").and_then(|s| LockMode::parse(s)) else {
                            bad(format!("{line:?}: info=lk without a known mode"));
                            continue;
                        };
                        match (info.vgs.last_mut(), &raw_r) {
                            (Some(vg), Some((t, name))) => match t.as_str() {
                                "lv" => vg.set_lv(name, mode),
                                "vg" => vg.vg_lock = Some(vg.vg_lock.map_or(mode, |x| x.max(mode))),
                                "gl" => vg.gl_lock = Some(vg.gl_lock.map_or(mode, |x| x.max(mode))),
                                _ => {}
                            },
                            _ => bad(format!(
                                "{line:?}: info=lk without a lockspace and resource before it"
                            )),
                        }
                    }
                    // structs, client, ls_action, r_action: bookkeeping, not lock state.
                    _ => {}
                }
            }
            _ => bad(format!("unrecognized line {line:?}")),
        }
    }
    Parsed {
        value: info,
        errors,
    }
}

fn exit_text(out: &Output) -> String {
    match out.status {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    }
}

pub async fn probe(cfg: &LvmConfig, timeout: Duration) -> Result<Parsed<LvmSnapshot>, ProbeError> {
    let report_cmd = fullreport_cmd(&cfg.lvm);
    let lockd_cmd = Cmd::new(cfg.lvmlockctl.as_str()).arg("--info");
    // Independent and cheap: ask both at once so neither eats the other's time budget.
    let (report, lockd) = tokio::join!(report_cmd.run(timeout), lockd_cmd.run(timeout));
    let report = report.map_err(ProbeError::from_exec)?;
    if !report.success() {
        return Err(ProbeError::Failed(format!(
            "`{} fullreport` failed ({}): {} — try `lvs` by hand to see the full error",
            cfg.lvm,
            exit_text(&report),
            report.summary()
        )));
    }
    let rep = parse_fullreport(&report.stdout).map_err(|e| {
        ProbeError::Failed(format!(
            "`{} fullreport` gave no usable report: {e}",
            cfg.lvm
        ))
    })?;
    let mut errors = rep.errors;
    let lockd = match lockd {
        Err(ExecError::NotFound { program }) => LockdStatus::Unavailable(format!(
            "`{program}` is not installed (package lvm2-lockd)"
        )),
        Err(e) => LockdStatus::Unavailable(e.to_string()),
        Ok(out) if out.success() => {
            let p = parse_lockctl_info(&out.stdout);
            errors.extend(p.errors);
            LockdStatus::Up(p.value)
        }
        Ok(out) => LockdStatus::Unavailable(format!(
            "lvmlockd did not answer `{}` ({}: {}): is lvmlockd running? `systemctl status lvmlockd`",
            lockd_cmd.display(),
            exit_text(&out),
            out.summary()
        )),
    };
    Ok(Parsed {
        value: LvmSnapshot {
            vgs: rep.value.vgs,
            lvs: rep.value.lvs,
            lockd,
        },
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_from_attr_and_flags() {
        assert_eq!(
            activity("active", Some(true), "-wi-a-----"),
            Activity::Active
        );
        assert_eq!(activity("", Some(false), "-wi-XX----"), Activity::Unknown);
        assert_eq!(activity("", Some(false), "-wi-------"), Activity::Inactive);
        assert_eq!(activity("", None, "-wi-s-----"), Activity::Active);
        assert_eq!(activity("", None, ""), Activity::Inactive);
    }

    #[test]
    fn strongest_lock_wins() {
        let p =
            parse_lockctl_info("VG v lock_type=sanlock u\nLK LV sh a\nLK LV ex a\nLK LV un a\n");
        assert_eq!(
            p.value.vgs[0].lv_locks,
            vec![("a".to_string(), LockMode::Ex)]
        );
        assert!(p.errors.is_empty());
    }
}
