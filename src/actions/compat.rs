//! Can the migration target run this guest? Compared before `virsh migrate` (the live migration's
//! preflight): the guest's CPU (mode, model, features) and machine type against what the target's
//! hypervisor reports — its `virsh domcapabilities` for the guest's virt type and arch, the machine
//! types of its `virsh capabilities`, its qemu and libvirt versions (`virsh version`).
//!
//! [`decide`] is pure: (guest domain XML, this node's capabilities, the target's) → compatible,
//! refused with the reason, or "cannot tell" with why (a warning; the migration goes on, as it
//! did before this check existed). [`gather`] is the effectful edge each agent runs for itself
//! (the target when asked over the peer call `capabilities`).
//!
//! What is compared:
//! - host-passthrough / maximum: the guest sees the host's own CPU, so the two hosts' CPUs (as
//!   their host-model descriptions show them) must be the same: vendor, model and feature list.
//! - host-model (unexpanded: the source's host-model is what the guest got) and custom models
//!   (a running host-model guest's live XML is already expanded into one): the model must be
//!   known to the target's qemu and usable there (libvirt's `usable`, and its `blockers` where
//!   it lists them, less what the guest disables and what was already missing on the source);
//!   a model of another vendor than the target's CPU that the target does not call usable is
//!   refused; every feature the guest requires is looked up in the target's host-model CPU:
//!   its require/disable lists, else the features of its base model in the target's libvirt
//!   CPU map (`host_model_features`; without them such a feature is "cannot tell").
//! - no `<cpu>` at all: the hypervisor's default model (qemu64 on x86_64), compared like a
//!   custom one relative to the source.
//! - machine type: listed by the target's qemu (`virsh capabilities`), or — when that list is
//!   not available — a versioned type (`pc-q35-8.2`) needs qemu ≥ 8.2 there.
//! - an older qemu on the target than here is a warning: upstream qemu guarantees migration to
//!   the same or a newer version only.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The test-only switch: the agent reports the capabilities in this directory instead of its
/// own (`domcapabilities.xml`, and if present `capabilities.xml`, `version.txt`). Never set it
/// in production.
pub const FAKE_CAPS_ENV: &str = "VMWARDEN_TEST_FAKE_CAPABILITIES_DIR";

/// The guest's virt type and arch: what the target asks its libvirt about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub virt_type: String,
    pub arch: String,
}

/// What an agent reports about its hypervisor (the peer call `capabilities`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostCaps {
    /// `virsh domcapabilities --virttype T --arch A`, raw XML.
    #[serde(default)]
    pub domcaps: Option<String>,
    /// Machine types (names and canonical aliases) for the arch, from `virsh capabilities`;
    /// empty when unknown.
    #[serde(default)]
    pub machines: Vec<String>,
    #[serde(default)]
    pub qemu: Option<String>,
    #[serde(default)]
    pub libvirt: Option<String>,
    /// What could not be read.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Set when the test switch replaced the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake_from: Option<String>,
    /// The features of the host-model CPU's base model (`domcaps`' host-model `<model>`) in this
    /// node's libvirt CPU map (`/usr/share/libvirt/cpu_map`): libvirt describes a host CPU as
    /// that model plus and minus features, so with the model's own features a peer can tell
    /// whether a feature not listed on top of it is there. None: unknown (an older agent, no
    /// CPU map, not x86) — such a feature is then "cannot tell".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_model_features: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Compatible,
    Refuse(String),
    Unknown(String),
}

/// The decision and what the operator should read with it (what was compared, warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    HostPassthrough,
    Maximum,
    HostModel,
    Custom,
    /// No `<cpu>` (or one without mode and model): the hypervisor's default model.
    Default,
}

impl CpuMode {
    fn as_str(self) -> &'static str {
        match self {
            CpuMode::HostPassthrough => "host-passthrough",
            CpuMode::Maximum => "maximum",
            CpuMode::HostModel => "host-model",
            CpuMode::Custom => "custom",
            CpuMode::Default => "default (no <cpu>)",
        }
    }
}

/// The parts of a domain definition the check reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub virt_type: String,
    pub arch: String,
    pub machine: Option<String>,
    pub mode: CpuMode,
    pub model: Option<String>,
    pub vendor: Option<String>,
    /// Features the guest needs (policy require or force, or no policy).
    pub required: BTreeSet<String>,
    /// Features the guest turns off (disable, forbid).
    pub disabled: BTreeSet<String>,
}

impl Guest {
    pub fn platform(&self) -> Platform {
        Platform {
            virt_type: self.virt_type.clone(),
            arch: self.arch.clone(),
        }
    }
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn elems<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn text(n: roxmltree::Node<'_, '_>, name: &'static str) -> String {
    child(n, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// A domain XML → [`Guest`]; an error in words for XML that is not a domain.
pub fn parse_guest(xml: &str) -> Result<Guest, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        return Err(format!("<{}> is not a <domain>", root.tag_name().name()));
    }
    let os_type = child(root, "os").and_then(|os| child(os, "type"));
    let mut g = Guest {
        virt_type: root.attribute("type").unwrap_or("").to_string(),
        arch: os_type
            .and_then(|t| t.attribute("arch"))
            .unwrap_or("")
            .to_string(),
        machine: os_type
            .and_then(|t| t.attribute("machine"))
            .map(str::to_string),
        mode: CpuMode::Default,
        model: None,
        vendor: None,
        required: BTreeSet::new(),
        disabled: BTreeSet::new(),
    };
    let Some(cpu) = child(root, "cpu") else {
        return Ok(g);
    };
    g.model = child(cpu, "model")
        .and_then(|m| m.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    g.vendor = child(cpu, "vendor")
        .and_then(|m| m.text())
        .map(|t| t.trim().to_string());
    g.mode = match cpu.attribute("mode") {
        Some("host-passthrough") => CpuMode::HostPassthrough,
        Some("maximum") => CpuMode::Maximum,
        Some("host-model") => CpuMode::HostModel,
        Some("custom") => CpuMode::Custom,
        None if g.model.is_some() => CpuMode::Custom,
        None => CpuMode::Default,
        Some(other) => return Err(format!("unknown CPU mode {other:?}")),
    };
    for f in cpu
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "feature")
    {
        let Some(name) = f.attribute("name") else {
            continue;
        };
        match f.attribute("policy").unwrap_or("require") {
            "require" | "force" => g.required.insert(name.to_string()),
            "disable" | "forbid" => g.disabled.insert(name.to_string()),
            _ => false, // optional: used if there, so never a reason to refuse
        };
    }
    Ok(g)
}

/// A host's CPU as libvirt's host-model describes it: a model plus features added (require)
/// and removed (disable) relative to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCpu {
    pub model: String,
    pub vendor: String,
    pub require: BTreeSet<String>,
    pub disable: BTreeSet<String>,
}

impl HostCpu {
    fn name(&self) -> String {
        format!("{} {}", self.vendor, self.model).trim().to_string()
    }

    /// Whether this CPU has feature `f` (libvirt's spelling): it is its base model plus what it
    /// requires minus what it disables, so a feature neither list names is there exactly when
    /// the base model has it (`base`: the model's features from the CPU map; None when they could
    /// not be read, and then such a feature cannot be told).
    pub fn has_feature<S: AsRef<str>>(&self, f: &str, base: Option<&[S]>) -> Option<bool> {
        if self.disable.contains(f) {
            Some(false)
        } else if self.require.contains(f) {
            Some(true)
        } else {
            base.map(|b| b.iter().any(|x| x.as_ref() == f))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    Yes,
    No,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCaps {
    pub usable: Usable,
    pub vendor: Option<String>,
    /// The features that make it unusable, where libvirt lists them (`<blockers>`, libvirt ≥ 10).
    pub blockers: Option<BTreeSet<String>>,
}

/// The CPU part of `virsh domcapabilities`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomCaps {
    pub virt_type: String,
    pub arch: String,
    pub passthrough: Option<bool>,
    pub maximum: Option<bool>,
    pub host_model: Option<HostCpu>,
    /// Custom models by name (canonical names too).
    pub models: BTreeMap<String, ModelCaps>,
}

pub fn parse_domcaps(xml: &str) -> Result<DomCaps, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domainCapabilities" {
        return Err(format!(
            "<{}> is not <domainCapabilities>",
            root.tag_name().name()
        ));
    }
    let mut caps = DomCaps {
        virt_type: text(root, "domain"),
        arch: text(root, "arch"),
        ..Default::default()
    };
    let Some(cpu) = elems(root, "cpu").next() else {
        return Ok(caps);
    };
    for mode in elems(cpu, "mode") {
        let supported = mode.attribute("supported").map(|s| s == "yes");
        match mode.attribute("name") {
            Some("host-passthrough") => caps.passthrough = supported,
            Some("maximum") => caps.maximum = supported,
            Some("host-model") if supported == Some(true) => {
                let mut h = HostCpu {
                    model: text(mode, "model"),
                    vendor: text(mode, "vendor"),
                    ..Default::default()
                };
                for f in elems(mode, "feature") {
                    let Some(name) = f.attribute("name") else {
                        continue;
                    };
                    match f.attribute("policy") {
                        Some("disable") | Some("forbid") => h.disable.insert(name.to_string()),
                        _ => h.require.insert(name.to_string()),
                    };
                }
                caps.host_model = Some(h);
            }
            Some("custom") => {
                let mut blockers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for b in elems(mode, "blockers") {
                    if let Some(m) = b.attribute("model") {
                        blockers.insert(
                            m.to_string(),
                            elems(b, "feature")
                                .filter_map(|f| f.attribute("name"))
                                .map(str::to_string)
                                .collect(),
                        );
                    }
                }
                for m in elems(mode, "model") {
                    let Some(name) = m.text().map(str::trim).filter(|t| !t.is_empty()) else {
                        continue;
                    };
                    let usable = match m.attribute("usable") {
                        Some("yes") => Usable::Yes,
                        Some("no") => Usable::No,
                        _ => Usable::Unknown,
                    };
                    let mc = ModelCaps {
                        usable,
                        vendor: m
                            .attribute("vendor")
                            .filter(|v| *v != "unknown")
                            .map(str::to_string),
                        blockers: match usable {
                            Usable::No => blockers.get(name).cloned(),
                            _ => Some(BTreeSet::new()),
                        },
                    };
                    if let Some(c) = m.attribute("canonical") {
                        caps.models.entry(c.to_string()).or_insert(mc.clone());
                    }
                    caps.models.insert(name.to_string(), mc);
                }
            }
            _ => {}
        }
    }
    Ok(caps)
}

/// Where libvirt keeps its CPU model definitions: the data its own CPU comparisons use.
pub const CPU_MAP_DIR: &str = "/usr/share/libvirt/cpu_map";

/// One file of libvirt's CPU map (`x86_MODEL.xml`) → the features `<model name=MODEL>` lists
/// itself and the models it includes (`<model name='parent'/>`, older libvirt); None when the
/// file does not define that model.
pub fn parse_cpu_map_model(xml: &str, model: &str) -> Option<(BTreeSet<String>, Vec<String>)> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let root = doc.root_element();
    let m = root.descendants().find(|n| {
        n.has_tag_name("model") && n.attribute("name") == Some(model) && n.has_children()
    })?;
    let features = elems(m, "feature")
        .filter_map(|f| f.attribute("name"))
        .map(str::to_string)
        .collect();
    let parents = elems(m, "model")
        .filter_map(|p| p.attribute("name"))
        .map(str::to_string)
        .collect();
    Some((features, parents))
}

/// The features of x86 CPU model `model` in the CPU map at `dir`, with those of the models it
/// includes. Err in words when the map has no such model (or a name that is not a plain model
/// name: it becomes part of a path).
pub fn cpu_map_features(dir: &std::path::Path, model: &str) -> Result<BTreeSet<String>, String> {
    let mut all = BTreeSet::new();
    let mut todo = vec![model.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(m) = todo.pop() {
        if !seen.insert(m.clone()) || seen.len() > 16 {
            continue;
        }
        if m.is_empty()
            || !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || m.starts_with('.')
        {
            return Err(format!("{m:?} is not a CPU model name"));
        }
        let path = dir.join(format!("x86_{m}.xml"));
        let xml = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (f, parents) = parse_cpu_map_model(&xml, &m)
            .ok_or_else(|| format!("{} does not define the model {m}", path.display()))?;
        all.extend(f);
        todo.extend(parents);
    }
    Ok(all)
}

/// Machine types of `arch` in `virsh capabilities` (names and canonical aliases).
pub fn parse_machines(capabilities_xml: &str, arch: &str) -> Result<Vec<String>, String> {
    let doc = roxmltree::Document::parse(capabilities_xml).map_err(|e| format!("not XML: {e}"))?;
    let mut out = BTreeSet::new();
    for a in doc
        .descendants()
        .filter(|n| n.has_tag_name("arch") && n.attribute("name") == Some(arch))
    {
        for m in a.descendants().filter(|n| n.has_tag_name("machine")) {
            if let Some(t) = m.text().map(str::trim).filter(|t| !t.is_empty()) {
                out.insert(t.to_string());
            }
            if let Some(c) = m.attribute("canonical") {
                out.insert(c.to_string());
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// `virsh version` → (libvirt, qemu): "Using library: libvirt 9.0.0", "Running hypervisor: QEMU 7.2.22".
pub fn parse_virsh_version(text: &str) -> (Option<String>, Option<String>) {
    let mut lib = None;
    let mut qemu = None;
    for l in text.lines() {
        if let Some(r) = l.trim().strip_prefix("Using library: libvirt ") {
            lib = Some(r.trim().to_string());
        } else if let Some(r) = l.trim().strip_prefix("Running hypervisor: QEMU ") {
            qemu = Some(r.trim().to_string());
        }
    }
    (lib, qemu)
}

/// "7.2.22" → [7, 2, 22]; None unless it starts with a number.
pub fn version_parts(v: &str) -> Option<Vec<u64>> {
    let parts: Vec<u64> = v
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|p| !p.is_empty())
        .map_while(|p| p.parse().ok())
        .collect();
    (!parts.is_empty()).then_some(parts)
}

/// The qemu version a versioned machine type needs: `pc-q35-8.2`, `pc-i440fx-7.2`, `virt-9.0`,
/// `pseries-8.0`, `s390-ccw-virtio-7.1` → [X, Y]. Unversioned (`pc`, `q35`) or distribution
/// types (`pc-q35-rhel9.4.0`, `pc-i440fx-jammy`) → None.
pub fn machine_version(machine: &str) -> Option<Vec<u64>> {
    let (_, v) = machine.rsplit_once('-')?;
    let (a, b) = v.split_once('.')?;
    Some(vec![a.parse().ok()?, b.parse().ok()?])
}

fn list(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The sides of a migration: names and what each reported.
pub struct Sides<'a> {
    pub here: &'a str,
    pub there: &'a str,
    pub here_caps: &'a HostCaps,
    pub there_caps: &'a HostCaps,
}

/// Whether `there` can run the guest of `guest_xml` that runs `here`. Pure.
pub fn decide(guest_xml: &str, s: &Sides<'_>) -> Verdict {
    let mut notes = Vec::new();
    let guest = match parse_guest(guest_xml) {
        Ok(g) => g,
        Err(e) => {
            return Verdict {
                decision: Decision::Unknown(format!("cannot read the guest's definition: {e}")),
                notes,
            }
        }
    };
    let mut refuse: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let there = s.there;
    let tq = s.there_caps.qemu.as_deref();
    let tq_name = tq.map(|v| format!("qemu {v}")).unwrap_or("qemu".into());

    // Machine type.
    match &guest.machine {
        None => unknown.push("the guest's definition names no machine type".into()),
        Some(m) if !s.there_caps.machines.is_empty() => {
            if s.there_caps.machines.iter().any(|x| x == m) {
                notes.push(format!("machine type {m}: supported by {there}'s {tq_name}"));
            } else {
                let newest: Vec<&str> = s
                    .there_caps
                    .machines
                    .iter()
                    .filter(|x| {
                        machine_version(x).is_some()
                            && x.rsplit_once('-').map(|p| p.0) == m.rsplit_once('-').map(|p| p.0)
                    })
                    .map(String::as_str)
                    .collect();
                let newest = newest
                    .iter()
                    .max_by_key(|x| machine_version(x))
                    .map(|x| format!(" (its newest of that family: {x})"))
                    .unwrap_or_default();
                refuse.push(format!(
                    "machine type {m} is not supported by {there}'s {tq_name}{newest}"
                ));
            }
        }
        Some(m) => match (machine_version(m), tq.and_then(version_parts)) {
            (Some(need), Some(have)) if have < need => refuse.push(format!(
                "machine type {m} is not supported by {there}'s {tq_name}"
            )),
            (Some(_), Some(_)) => notes.push(format!(
                "machine type {m}: {there}'s {tq_name} is new enough (its machine list was not available)"
            )),
            _ => unknown.push(format!(
                "{there} did not list its machine types and {m} does not say which qemu it needs"
            )),
        },
    }

    // Versions: migrating to an older qemu is not guaranteed upstream.
    if let (Some(hq), Some(tq)) = (s.here_caps.qemu.as_deref(), tq) {
        if let (Some(a), Some(b)) = (version_parts(hq), version_parts(tq)) {
            if b < a {
                notes.push(format!(
                    "warning: {there} runs an older qemu ({tq}) than {} ({hq}); qemu guarantees migration to the same or a newer version only — keep the nodes on the same versions",
                    s.here
                ));
            }
        }
    }

    // CPU.
    cpu_check(&guest, s, &mut refuse, &mut unknown, &mut notes);

    let decision = if !refuse.is_empty() {
        Decision::Refuse(refuse.join("; "))
    } else if !unknown.is_empty() {
        Decision::Unknown(unknown.join("; "))
    } else {
        Decision::Compatible
    };
    Verdict { decision, notes }
}

fn caps_of(c: &HostCaps) -> Result<DomCaps, String> {
    match &c.domcaps {
        Some(x) => parse_domcaps(x),
        None if !c.errors.is_empty() => Err(c.errors.join("; ")),
        None => Err("no domain capabilities".into()),
    }
}

fn cpu_check(
    g: &Guest,
    s: &Sides<'_>,
    refuse: &mut Vec<String>,
    unknown: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let (here, there) = (s.here, s.there);
    let tc = match caps_of(s.there_caps) {
        Ok(c) => c,
        Err(e) => {
            unknown.push(format!("cannot read {there}'s domain capabilities: {e}"));
            return;
        }
    };
    let hc = caps_of(s.here_caps).ok();
    let h_hm = hc.as_ref().and_then(|c| c.host_model.as_ref());
    let t_hm = tc.host_model.as_ref();
    match g.mode {
        CpuMode::HostPassthrough | CpuMode::Maximum => {
            let supported = if g.mode == CpuMode::Maximum {
                tc.maximum
            } else {
                tc.passthrough
            };
            if supported == Some(false) {
                refuse.push(format!(
                    "{there}'s hypervisor does not support the {} CPU mode the guest uses",
                    g.mode.as_str()
                ));
                return;
            }
            match (h_hm, t_hm) {
                (Some(a), Some(b)) if a == b => notes.push(format!(
                    "CPU {}: {here} and {there} have the same CPU ({})",
                    g.mode.as_str(),
                    b.name()
                )),
                (Some(a), Some(b)) => {
                    let mut why = format!(
                        "the guest uses {} (it sees the host's own CPU) and {there}'s CPU ({}) is not {here}'s ({})",
                        g.mode.as_str(),
                        b.name(),
                        a.name()
                    );
                    if a.model == b.model && a.vendor == b.vendor {
                        let lacks = missing_same_model(a, b);
                        if !lacks.is_empty() {
                            why.push_str(&format!(": {there}'s CPU lacks {}", list(&lacks)));
                        } else {
                            why.push_str(": their feature lists differ");
                        }
                    }
                    refuse.push(why);
                }
                _ => unknown.push(format!(
                    "the guest uses {}: it can only move between identical CPUs, and the host CPUs of {here} and {there} could not both be read",
                    g.mode.as_str()
                )),
            }
        }
        CpuMode::HostModel if g.model.is_none() => match h_hm {
            Some(h) => custom_check(
                "host-model",
                &h.model,
                Some(h.vendor.as_str()),
                &h.require,
                &h.disable,
                hc.as_ref(),
                &tc,
                s,
                refuse,
                unknown,
                notes,
            ),
            None => unknown.push(format!(
                "the guest uses host-model and {here}'s own host-model CPU could not be read"
            )),
        },
        CpuMode::HostModel | CpuMode::Custom => {
            let model = g.model.clone().unwrap_or_default();
            custom_check(
                g.mode.as_str(),
                &model,
                g.vendor.as_deref(),
                &g.required,
                &g.disabled,
                hc.as_ref(),
                &tc,
                s,
                refuse,
                unknown,
                notes,
            )
        }
        CpuMode::Default => {
            let model = match g.arch.as_str() {
                "x86_64" => "qemu64",
                "i686" => "qemu32",
                a => {
                    unknown.push(format!(
                        "the guest has no <cpu>: the default CPU model of {a} guests is not compared"
                    ));
                    return;
                }
            };
            custom_check(
                "default",
                model,
                None,
                &g.required,
                &g.disabled,
                hc.as_ref(),
                &tc,
                s,
                refuse,
                unknown,
                notes,
            )
        }
    }
}

/// Features `a` has that `b` lacks, for two host CPUs described relative to the same model.
fn missing_same_model(a: &HostCpu, b: &HostCpu) -> BTreeSet<String> {
    let mut m: BTreeSet<String> = b.disable.difference(&a.disable).cloned().collect();
    m.extend(a.require.difference(&b.require).cloned());
    m
}

#[allow(clippy::too_many_arguments)]
fn custom_check(
    what: &str,
    model: &str,
    vendor: Option<&str>,
    required: &BTreeSet<String>,
    disabled: &BTreeSet<String>,
    hc: Option<&DomCaps>,
    tc: &DomCaps,
    s: &Sides<'_>,
    refuse: &mut Vec<String>,
    unknown: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let (here, there) = (s.here, s.there);
    let h_hm = hc.and_then(|c| c.host_model.as_ref());
    let t_hm = tc.host_model.as_ref();
    let same_host = matches!((h_hm, t_hm), (Some(a), Some(b)) if a == b);
    let desc = format!("the guest's {what} CPU ({model})");
    if same_host {
        let h_use = hc.and_then(|c| c.models.get(model)).map(|m| m.usable);
        let t_use = tc.models.get(model).map(|m| m.usable);
        if h_use == t_use {
            notes.push(format!(
                "CPU {what} {model}: {there} has the same CPU as {here} ({})",
                t_hm.map(HostCpu::name).unwrap_or_default()
            ));
            return;
        }
    }
    if model.is_empty() {
        unknown.push(format!("{desc} names no model"));
        return;
    }
    let t_model = tc.models.get(model);
    let vendor = vendor
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .or_else(|| t_model.and_then(|m| m.vendor.clone()))
        .or_else(|| {
            hc.and_then(|c| c.models.get(model))
                .and_then(|m| m.vendor.clone())
        });
    // Another vendor's model that the target does not call usable.
    if let (Some(v), Some(t)) = (&vendor, t_hm) {
        if !t.vendor.is_empty() && *v != t.vendor && t_model.map(|m| m.usable) != Some(Usable::Yes)
        {
            refuse.push(format!(
                "{desc} is an {v} model and {there}'s CPU is an {} one ({})",
                t.vendor,
                t.name()
            ));
            return;
        }
    }
    let mut model_ok = false;
    match t_model {
        None if tc.models.is_empty() => unknown.push(format!(
            "{there} lists no CPU models, so {model} cannot be looked up"
        )),
        None => refuse.push(format!(
            "{there}'s qemu does not know the CPU model {model} ({desc})"
        )),
        Some(m) => match m.usable {
            Usable::Yes => model_ok = true,
            Usable::Unknown => unknown.push(format!(
                "{there}'s libvirt does not say whether {model} is usable there"
            )),
            Usable::No => {
                let h_model = hc.and_then(|c| c.models.get(model));
                match &m.blockers {
                    Some(b) => {
                        let mut lacks: BTreeSet<String> = b.difference(disabled).cloned().collect();
                        if let Some(hb) = h_model.and_then(|h| h.blockers.as_ref()) {
                            lacks = lacks.difference(hb).cloned().collect();
                        }
                        if lacks.is_empty() {
                            model_ok = true;
                        } else {
                            refuse.push(format!(
                                "{there}'s CPU lacks {} that {desc} uses",
                                list(&lacks)
                            ));
                        }
                    }
                    None if h_model.map(|h| h.usable) == Some(Usable::No) => unknown.push(format!(
                        "{model} is not fully usable on {here} nor on {there}, and libvirt does not list which features either lacks"
                    )),
                    None => refuse.push(format!(
                        "{desc} is usable on {here} but not on {there}: {there}'s CPU ({}) lacks features {model} needs (its libvirt does not list which)",
                        t_hm.map(HostCpu::name).unwrap_or_else(|| "?".into())
                    )),
                }
            }
        },
    }
    // The features the guest requires beyond its model, looked up in the target's host CPU.
    let mut lacks = BTreeSet::new();
    let mut cannot_tell = BTreeSet::new();
    for f in required {
        let Some(t) = t_hm else {
            cannot_tell.insert(f.clone());
            continue;
        };
        let has = if t.model == model && !t.require.contains(f) && !t.disable.contains(f) {
            // Listed by the guest on top of the model, not by the target's CPU on top of the
            // same model: the target's CPU lacks it.
            Some(false)
        } else {
            t.has_feature(f, s.there_caps.host_model_features.as_deref())
        };
        match has {
            Some(true) => {}
            Some(false) => {
                lacks.insert(f.clone());
            }
            None => {
                cannot_tell.insert(f.clone());
            }
        }
    }
    if !lacks.is_empty() {
        refuse.push(format!(
            "{there}'s CPU lacks {} that {desc} uses",
            list(&lacks)
        ));
    } else if !cannot_tell.is_empty() {
        unknown.push(format!(
            "cannot tell whether {there}'s CPU ({}) has {} that {desc} requires: its host CPU is described relative to another model",
            t_hm.map(HostCpu::name).unwrap_or_else(|| "?".into()),
            list(&cannot_tell)
        ));
    } else if model_ok {
        notes.push(format!(
            "CPU {what} {model}: usable on {there}, with every feature the guest requires"
        ));
    }
}

/// This node's capabilities for `platform` (the effectful edge: three `virsh` calls, each with
/// the configured timeout), or those in the test switch's directory.
pub async fn gather(virsh: &super::virsh::Virsh, platform: &Platform) -> HostCaps {
    let mut caps = HostCaps::default();
    let fake = std::env::var(FAKE_CAPS_ENV).ok().filter(|d| !d.is_empty());
    if let Some(d) = &fake {
        tracing::warn!(
            "{FAKE_CAPS_ENV}={d}: reporting the capabilities in {d} instead of this node's (test switch)"
        );
        caps.fake_from = Some(d.clone());
    }
    let fake = fake.as_deref();
    let mut dc_args = vec!["domcapabilities"];
    if !platform.virt_type.is_empty() {
        dc_args.extend(["--virttype", platform.virt_type.as_str()]);
    }
    if !platform.arch.is_empty() {
        dc_args.extend(["--arch", platform.arch.as_str()]);
    }
    // The domain capabilities are what the decision rests on: with the test switch on, falling back
    // to this node's own would let a test pass on the wrong host's data, so a missing file is an error.
    let (dc, cap, ver) = tokio::join!(
        fake_or_virsh(virsh, fake, "domcapabilities.xml", true, &dc_args),
        fake_or_virsh(virsh, fake, "capabilities.xml", false, &["capabilities"]),
        fake_or_virsh(virsh, fake, "version.txt", false, &["version"]),
    );
    match dc {
        Ok(x) => caps.domcaps = Some(x),
        Err(e) => caps.errors.push(format!("domain capabilities: {e}")),
    }
    match cap.and_then(|x| parse_machines(&x, &platform.arch)) {
        Ok(m) => caps.machines = m,
        Err(e) => caps.errors.push(format!("machine types: {e}")),
    }
    match ver {
        Ok(v) => (caps.libvirt, caps.qemu) = parse_virsh_version(&v),
        Err(e) => caps.errors.push(format!("versions: {e}")),
    }
    // The base model's features, from this node's own libvirt CPU map (x86 only: other arches'
    // maps are laid out differently). Missing, the peer says "cannot tell" as before.
    if matches!(platform.arch.as_str(), "x86_64" | "i686") {
        let model = caps
            .domcaps
            .as_deref()
            .and_then(|x| parse_domcaps(x).ok())
            .and_then(|d| d.host_model)
            .map(|h| h.model);
        if let Some(m) = model.filter(|m| !m.is_empty()) {
            match cpu_map_features(std::path::Path::new(CPU_MAP_DIR), &m) {
                Ok(f) => caps.host_model_features = Some(f.into_iter().collect()),
                Err(e) => caps
                    .errors
                    .push(format!("features of the CPU model {m}: {e}")),
            }
        }
    }
    caps
}

/// One capability text: the test switch's file `name` when the switch is on and the file exists,
/// otherwise `virsh ARGS` on this node — unless `required`, where a missing fake file is an error.
async fn fake_or_virsh(
    virsh: &super::virsh::Virsh,
    fake: Option<&str>,
    name: &str,
    required: bool,
    args: &[&str],
) -> Result<String, String> {
    if let Some(d) = fake {
        match std::fs::read_to_string(std::path::Path::new(d).join(name)) {
            Ok(x) => return Ok(x),
            Err(_) if required => {
                return Err(format!("the test switch's directory has no {name}"));
            }
            Err(_) => {}
        }
    }
    virsh
        .run(args, virsh.timeout)
        .await
        .map_err(|e| e.to_string())
}

/// The live migration preflight's compatibility check: refuses when the target cannot run the
/// guest; when it cannot tell (an older target agent, unreadable capabilities) it leaves a note
/// in the report and lets the migration go on.
pub(crate) async fn preflight(
    ctx: &super::Ctx<'_>,
    peer: &crate::config::Peer,
) -> Result<(), super::ActionError> {
    let e = ctx.engine;
    let virsh = e.virsh();
    let vm = ctx.vm.as_str();
    let there = peer.name.as_str();
    let note = |n: String| {
        if let Ok(mut v) = ctx.notes.lock() {
            v.push(n);
        }
    };
    let cannot_tell = |why: String| {
        tracing::warn!(vm, "compatibility with {there}: cannot tell: {why}");
        note(format!(
            "compatibility with {there}: cannot tell — {why}; migrating without that check"
        ));
    };
    let xml = match virsh.run(&["dumpxml", vm], virsh.timeout).await {
        Ok(x) => x,
        Err(err) => {
            cannot_tell(format!("the guest's definition could not be read ({err})"));
            return Ok(());
        }
    };
    let platform = parse_guest(&xml).map(|g| g.platform()).unwrap_or_default();
    let req = crate::api::peer::PeerRequest {
        op: crate::api::peer::PeerOp::Capabilities,
        vm: vm.to_string(),
        disks: Vec::new(),
        action_id: ctx.id.clone(),
        platform: Some(platform.clone()),
        action: None,
        drbd: false,
    };
    let (here_caps, reply) = tokio::join!(gather(&virsh, &platform), e.call_peer_with(peer, &req));
    let there_caps = match reply {
        Ok(r) => match r.caps {
            Some(c) => c,
            None => {
                cannot_tell(format!("{there}'s agent answered without its capabilities"));
                return Ok(());
            }
        },
        Err(err) => {
            cannot_tell(format!(
                "{there}'s agent did not report its capabilities (an older vmwarden does not know the request): {err}"
            ));
            return Ok(());
        }
    };
    if let Some(d) = &there_caps.fake_from {
        note(format!(
            "{there} reports the capabilities in {d} ({FAKE_CAPS_ENV}, a test switch), not its own"
        ));
    }
    let v = decide(
        &xml,
        &Sides {
            here: &e.node,
            there,
            here_caps: &here_caps,
            there_caps: &there_caps,
        },
    );
    for n in v.notes {
        note(format!("compatibility: {n}"));
    }
    match v.decision {
        Decision::Compatible => Ok(()),
        Decision::Refuse(why) => Err(super::ActionError::Refused(format!(
            "{vm} cannot run on {there}: {why} — migrate it to a node with a like CPU and qemu, or give it a CPU model both nodes can run (`virsh domcapabilities` on each)"
        ))),
        Decision::Unknown(why) => {
            cannot_tell(why);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_machines() {
        assert_eq!(version_parts("7.2.22"), Some(vec![7, 2, 22]));
        assert_eq!(version_parts("8.2.0+dfsg"), Some(vec![8, 2, 0]));
        assert_eq!(version_parts("x"), None);
        assert_eq!(machine_version("pc-q35-8.2"), Some(vec![8, 2]));
        assert_eq!(machine_version("pc-i440fx-7.2"), Some(vec![7, 2]));
        assert_eq!(machine_version("q35"), None);
        assert_eq!(machine_version("pc-q35-rhel9.4.0"), None);
        let (l, q) = parse_virsh_version(
            "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\nUsing API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.22\n",
        );
        assert_eq!(
            (l.as_deref(), q.as_deref()),
            (Some("9.0.0"), Some("7.2.22"))
        );
    }

    #[test]
    fn host_cpu_features() {
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        let hm = HostCpu {
            model: "Skylake-Client-IBRS".into(),
            vendor: "Intel".into(),
            require: set(&["la57"]),
            disable: set(&["avx512f"]),
        };
        let base = ["avx512f", "sse4.2"];
        // Required beats the base model, disabled beats it too, the rest is the base model's.
        assert_eq!(hm.has_feature("la57", Some(&base[..])), Some(true));
        assert_eq!(hm.has_feature("avx512f", Some(&base[..])), Some(false));
        assert_eq!(hm.has_feature("sse4.2", Some(&base[..])), Some(true));
        assert_eq!(hm.has_feature("gfni", Some(&base[..])), Some(false));
        // Without the CPU map only the two lists can tell.
        assert_eq!(hm.has_feature("la57", None::<&[&str]>), Some(true));
        assert_eq!(hm.has_feature("avx512f", None::<&[&str]>), Some(false));
        assert_eq!(hm.has_feature("sse4.2", None::<&[&str]>), None);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(parse_guest("<domain").is_err());
        assert!(parse_guest("<pool/>").is_err());
        assert!(parse_guest("<domain><cpu mode='weird'/></domain>").is_err());
        assert!(parse_domcaps("").is_err());
        let caps = HostCaps::default();
        let v = decide(
            "not xml",
            &Sides {
                here: "n1",
                there: "n2",
                here_caps: &caps,
                there_caps: &caps,
            },
        );
        assert!(matches!(v.decision, Decision::Unknown(_)), "{v:?}");
    }
}
