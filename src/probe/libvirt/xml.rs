//! Disks and interfaces from a domain's XML (`virDomainGetXMLDesc`): only what the probe needs —
//! each disk's target and source, each interface's target device and MAC. Pure and total: any
//! input gives a result (possibly empty) plus notes on what was skipped; it never panics.

use roxmltree::{Document, Node};

use super::{Disk, Interface};
use crate::probe::Parsed;

/// What a domain XML says about the devices the probe reports on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainDevices {
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
}

/// Extract disks and interfaces from `<domain><devices>`. DTDs are refused by the parser (no
/// entity expansion); an element lacking what identifies it (a disk without `<target dev>`) is
/// skipped with a note.
pub fn parse_domain_xml(xml: &str) -> Parsed<DomainDevices> {
    let mut out = Parsed::new(DomainDevices::default());
    let doc = match Document::parse(xml) {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(format!("domain XML does not parse: {e}"));
            return out;
        }
    };
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        out.errors.push(format!(
            "domain XML has root element <{}>, expected <domain>",
            root.tag_name().name()
        ));
        return out;
    }
    let name = child(root, "name")
        .and_then(|n| n.text())
        .unwrap_or("?")
        .trim()
        .to_string();
    for devices in children(root, "devices") {
        for dev in devices.children().filter(Node::is_element) {
            match dev.tag_name().name() {
                "disk" => match disk(dev) {
                    Some(d) => out.value.disks.push(d),
                    None => out.errors.push(format!(
                        "domain {name}: skipped a <disk> without <target dev=...>"
                    )),
                },
                "interface" => out.value.interfaces.push(interface(dev)),
                _ => {}
            }
        }
    }
    out
}

fn children<'a, 'i>(n: Node<'a, 'i>, tag: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == tag)
}

fn child<'a, 'i>(n: Node<'a, 'i>, tag: &'a str) -> Option<Node<'a, 'i>> {
    children(n, tag).next()
}

fn attr(n: Option<Node>, name: &str) -> Option<String> {
    n.and_then(|n| n.attribute(name))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn disk(n: Node) -> Option<Disk> {
    let target = attr(child(n, "target"), "dev")?;
    let source_type = n.attribute("type").unwrap_or("").trim().to_string();
    // Only the disk's own <source>: <backingStore> and <mirror> nest sources of their own.
    let src = child(n, "source");
    let source = match source_type.as_str() {
        "file" => attr(src, "file"),
        "block" => attr(src, "dev"),
        "dir" => attr(src, "dir"),
        "vhostuser" => attr(src, "path"),
        "volume" => match (attr(src, "pool"), attr(src, "volume")) {
            (Some(p), Some(v)) => Some(format!("{p}/{v}")),
            (_, v) => v,
        },
        "network" => network_source(src),
        // No or an unfamiliar type: take the first attribute that names a path.
        _ => attr(src, "file")
            .or_else(|| attr(src, "dev"))
            .or_else(|| attr(src, "dir")),
    };
    Some(Disk {
        target,
        device: n.attribute("device").unwrap_or("disk").trim().to_string(),
        source_type,
        source,
        stats: None,
    })
}

/// `rbd:pool/image`, `iscsi:iqn.../1`, or `nbd://host:port` when the source has no name.
fn network_source(src: Option<Node>) -> Option<String> {
    let protocol = attr(src, "protocol").unwrap_or_else(|| "network".to_string());
    if let Some(name) = attr(src, "name") {
        return Some(format!("{protocol}:{name}"));
    }
    let host = src.and_then(|s| child(s, "host"));
    let h = attr(host, "name").or_else(|| attr(host, "socket"))?;
    Some(match attr(host, "port") {
        Some(p) => format!("{protocol}://{h}:{p}"),
        None => format!("{protocol}://{h}"),
    })
}

fn interface(n: Node) -> Interface {
    Interface {
        // Present only while the domain runs (libvirt names the tap: vnet0).
        target: attr(child(n, "target"), "dev"),
        mac: attr(child(n, "mac"), "address"),
        if_type: n.attribute("type").unwrap_or("").trim().to_string(),
        stats: None,
    }
}
