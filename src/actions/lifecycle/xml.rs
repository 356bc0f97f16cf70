//! The domain XML of `ctl create`: parsed (never pattern-matched), checked, and given exactly one
//! disk — the one vmwarden made — by splicing the new `<disk>` element into the original text at
//! the byte range roxmltree reports, so everything else the operator wrote stays as written.
//! roxmltree refuses DTDs (no entity tricks).

use roxmltree::{Document, Node};

/// The disk vmwarden made for the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewDiskXml {
    /// An LV: `<disk type='block'>`, `<source dev=…>`.
    Block(String),
    /// A raw file on shared storage: `<disk type='file'>`, `<source file=…>`.
    File(String),
}

impl NewDiskXml {
    pub fn path(&self) -> &str {
        match self {
            NewDiskXml::Block(p) | NewDiskXml::File(p) => p,
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn is_disk(n: &Node) -> bool {
    n.is_element() && n.has_tag_name("disk") && matches!(n.attribute("device"), None | Some("disk"))
}

/// Check `xml` is a domain named `vm` and return it with its one disk (device `disk`; cdroms and
/// floppies are left alone) pointing at `disk` — replaced if it has one (its `<target>`,
/// `<boot>` and `<address>` kept), inserted first in `<devices>` otherwise.
pub fn with_disk(xml: &str, vm: &str, disk: &NewDiskXml) -> Result<String, String> {
    let doc = Document::parse(xml).map_err(|e| format!("the domain XML does not parse: {e}"))?;
    let root = doc.root_element();
    if !root.has_tag_name("domain") {
        return Err(format!(
            "the XML's root element is <{}>, not <domain>: give a libvirt domain definition",
            root.tag_name().name()
        ));
    }
    let name = root
        .children()
        .find(|n| n.has_tag_name("name"))
        .and_then(|n| n.text())
        .map(str::trim)
        .unwrap_or("");
    if name.is_empty() {
        return Err(format!(
            "the domain XML has no <name>: add <name>{vm}</name>"
        ));
    }
    if name != vm {
        return Err(format!(
            "the domain XML names the VM {name:?}, not {vm:?}: fix <name> or ask for {name:?}"
        ));
    }
    let Some(devices) = root.children().find(|n| n.has_tag_name("devices")) else {
        return Err("the domain XML has no <devices>: add <devices>…</devices> (an emulator, a console, a network…)".into());
    };
    let disks: Vec<Node> = devices.children().filter(is_disk).collect();
    if disks.len() > 1 {
        return Err(format!(
            "the domain XML has {} disks: `ctl create` makes one (the system disk on the LV it creates) — leave one <disk> (or none) in the XML",
            disks.len()
        ));
    }
    let mut keep = String::new();
    let mut have_target = false;
    if let Some(d) = disks.first() {
        for c in d.children().filter(|c| c.is_element()) {
            let tag = c.tag_name().name();
            if matches!(tag, "target" | "boot" | "address" | "serial" | "alias") {
                have_target |= tag == "target";
                keep.push_str("\n      ");
                keep.push_str(&xml[c.range()]);
            }
        }
    }
    if !have_target {
        keep.insert_str(0, "\n      <target dev='vda' bus='virtio'/>");
    }
    let element = match disk {
        NewDiskXml::Block(p) => format!(
            "<disk type='block' device='disk'>\n      <driver name='qemu' type='raw' cache='none' io='native'/>\n      <source dev='{}'/>{keep}\n    </disk>",
            esc(p)
        ),
        NewDiskXml::File(p) => format!(
            "<disk type='file' device='disk'>\n      <driver name='qemu' type='raw' cache='none'/>\n      <source file='{}'/>{keep}\n    </disk>",
            esc(p)
        ),
    };
    let out = match disks.first() {
        Some(d) => {
            let r = d.range();
            format!("{}{element}{}", &xml[..r.start], &xml[r.end..])
        }
        None => {
            // Before the first child of <devices> (a self-closing <devices/> has none).
            let Some(first) = devices.first_child() else {
                return Err("<devices/> is empty: add at least an emulator or a console".into());
            };
            let at = first.range().start;
            format!("{}\n    {element}{}", &xml[..at], &xml[at..])
        }
    };
    // What was written is what is meant: one disk, on the new source.
    let check = Document::parse(&out).map_err(|e| format!("rewritten XML does not parse: {e}"))?;
    let srcs = disk_sources(&check);
    if srcs != [disk.path().to_string()] {
        return Err(format!(
            "rewritten XML has disks {srcs:?}, expected only {:?}",
            disk.path()
        ));
    }
    Ok(out)
}

/// Sources of the `disk` devices (`dev`, `file`).
pub fn disk_sources(doc: &Document) -> Vec<String> {
    let root = doc.root_element();
    root.children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children().filter(is_disk))
        .filter_map(|d| {
            let s = d.children().find(|c| c.has_tag_name("source"))?;
            s.attribute("dev")
                .or_else(|| s.attribute("file"))
                .map(str::to_string)
        })
        .collect()
}

/// The `<target dev=…>` of the disk whose source is `path` (or the path itself when the target
/// is asked: `vda` → its source), from a domain's XML: (target, source).
pub fn find_disk(xml: &str, which: &str) -> Result<(String, String), String> {
    let doc = Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    let mut seen = Vec::new();
    for d in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children().filter(is_disk))
    {
        let target = d
            .children()
            .find(|c| c.has_tag_name("target"))
            .and_then(|t| t.attribute("dev"))
            .unwrap_or("")
            .to_string();
        let src = d
            .children()
            .find(|c| c.has_tag_name("source"))
            .and_then(|s| s.attribute("dev").or_else(|| s.attribute("file")))
            .unwrap_or("")
            .to_string();
        if !src.is_empty() && (target == which || src == which) {
            return Ok((target, src));
        }
        seen.push(format!("{target} ({src})"));
    }
    Err(format!(
        "no disk {which:?}: its disks are {} (name one by target, e.g. vda, or by source path)",
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "<domain type='kvm'>\n  <name>vm1</name>\n  <memory unit='MiB'>64</memory>\n  <os><type arch='x86_64'>hvm</type></os>\n  <devices>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source file='/old.qcow2'/>\n      <target dev='sda' bus='sata'/>\n      <boot order='1'/>\n    </disk>\n    <disk type='file' device='cdrom'><source file='/x.iso'/><target dev='hdc'/></disk>\n    <serial type='pty'/>\n  </devices>\n</domain>\n";

    #[test]
    fn replaces_the_disk_keeping_target_and_the_rest() {
        let out = with_disk(BASE, "vm1", &NewDiskXml::Block("/dev/vg1/vm1".into())).unwrap();
        let doc = Document::parse(&out).unwrap();
        assert_eq!(disk_sources(&doc), vec!["/dev/vg1/vm1"]);
        assert!(out.contains("<target dev='sda' bus='sata'/>"), "{out}");
        assert!(out.contains("<boot order='1'/>"));
        assert!(out.contains("type='block'") && out.contains("cache='none'"));
        assert!(!out.contains("/old.qcow2") && !out.contains("qcow2"));
        assert!(out.contains("/x.iso"), "cdrom kept");
        assert!(out.contains("<memory unit='MiB'>64</memory>"));
        assert_eq!(find_disk(&out, "sda").unwrap().1, "/dev/vg1/vm1");
        assert_eq!(find_disk(&out, "/dev/vg1/vm1").unwrap().0, "sda");
        assert!(find_disk(&out, "vdz")
            .unwrap_err()
            .contains("sda (/dev/vg1/vm1)"));
    }

    #[test]
    fn inserts_a_disk_when_there_is_none() {
        let xml =
            "<domain type='qemu'><name>vm2</name><devices><serial type='pty'/></devices></domain>";
        let out = with_disk(xml, "vm2", &NewDiskXml::File("/shared/vm2.raw".into())).unwrap();
        let doc = Document::parse(&out).unwrap();
        assert_eq!(disk_sources(&doc), vec!["/shared/vm2.raw"]);
        assert!(out.contains("<target dev='vda' bus='virtio'/>"));
    }

    #[test]
    fn refusals() {
        let d = NewDiskXml::Block("/dev/vg1/vm1".into());
        let e = with_disk(BASE, "vm9", &d).unwrap_err();
        assert!(e.contains("\"vm1\", not \"vm9\""), "{e}");
        assert!(with_disk("<domain><devices/></domain>", "vm1", &d)
            .unwrap_err()
            .contains("no <name>"));
        assert!(with_disk("<network><name>vm1</name></network>", "vm1", &d)
            .unwrap_err()
            .contains("<network>"));
        assert!(with_disk("<domain><name>vm1</name></domain>", "vm1", &d)
            .unwrap_err()
            .contains("no <devices>"));
        assert!(with_disk("<domain><name>vm1", "vm1", &d)
            .unwrap_err()
            .contains("does not parse"));
        let two = BASE.replace("device='cdrom'", "device='disk'");
        assert!(with_disk(&two, "vm1", &d).unwrap_err().contains("2 disks"));
        // No DTD, no entities.
        let dtd = "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><domain><name>vm1</name><devices><serial/></devices></domain>";
        assert!(with_disk(dtd, "vm1", &d).is_err());
        // A path with quotes is escaped, not spliced raw.
        let out = with_disk(BASE, "vm1", &NewDiskXml::File("/a'b/vm1.raw".into())).unwrap();
        assert_eq!(
            disk_sources(&Document::parse(&out).unwrap()),
            vec!["/a'b/vm1.raw"]
        );
    }
}
