//! A VM's intent — should run / should be stopped — kept in the domain's own libvirt metadata
//! (`<metadata><vmwarden:vmwarden xmlns:vmwarden="…"><intent state="run" …/></vmwarden:vmwarden>`).
//!
//! Why the domain's metadata and not a file on the node: it survives agent restarts and node
//! reboots with the definition itself, and it *moves with the VM*: `virsh migrate --persistent
//! --undefinesource` carries the live XML (with its metadata) to the target and removes it from
//! the source, so the target's watchdog owns the intent afterwards and the source has nothing left
//! to restart. A file would have to be handed over by hand and could be left behind.

use roxmltree::{Document, Node};

use crate::actions::virsh::{Virsh, VirshError};

/// The metadata namespace (an identifier, never fetched).
pub const NS: &str = "http://vmwarden.org/xmlns/intent/1";
/// The element prefix virsh gives it.
pub const KEY: &str = "vmwarden";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Want {
    Run,
    Stop,
}

impl Want {
    pub fn as_str(self) -> &'static str {
        match self {
            Want::Run => "run",
            Want::Stop => "stop",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Intent {
    pub want: Want,
    /// Unix time it was set.
    pub since: u64,
    /// Who set it: `ctl`, `watchdog`, `adopted` (a fixed word from vmwarden's code).
    pub by: String,
    /// `managed="no"` opts the VM out of the watchdog (an operator sets it with virsh metadata).
    pub managed: bool,
}

impl Intent {
    pub fn new(want: Want, by: &str) -> Intent {
        Intent {
            want,
            since: crate::actions::journal::now_unix(),
            by: by.to_string(),
            managed: true,
        }
    }

    /// The XML `virsh metadata --set` takes (the root element gets the namespace there).
    pub fn to_xml(&self) -> String {
        let by: String = self
            .by
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        format!(
            "<vmwarden><intent state=\"{}\" since=\"{}\" by=\"{by}\"{}/></vmwarden>",
            self.want.as_str(),
            self.since,
            if self.managed { "" } else { " managed=\"no\"" }
        )
    }

    /// The intent inside `<metadata>` of a parsed domain XML, if vmwarden's element is there.
    /// A `state` other than run/stop is no intent at all (never guessed).
    pub fn from_domain(doc: &Document) -> Option<Intent> {
        let meta = doc
            .root_element()
            .children()
            .find(|n| n.has_tag_name("metadata"))?;
        let ours = meta
            .children()
            .find(|n| n.is_element() && n.tag_name().namespace() == Some(NS))?;
        Self::from_element(ours)
    }

    fn from_element(ours: Node) -> Option<Intent> {
        let i = ours.children().find(|n| n.has_tag_name("intent"))?;
        let want = match i.attribute("state")? {
            "run" => Want::Run,
            "stop" => Want::Stop,
            _ => return None,
        };
        Some(Intent {
            want,
            since: i
                .attribute("since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            by: i.attribute("by").unwrap_or("").to_string(),
            managed: i.attribute("managed") != Some("no"),
        })
    }

    /// From a whole domain XML text.
    pub fn from_domain_xml(xml: &str) -> Option<Intent> {
        let doc = Document::parse(xml).ok()?;
        Self::from_domain(&doc)
    }
}

/// Record `intent` in the domain's definition (`--config`) and, for a running domain, in its live
/// XML too (`--live`: what a live migration carries).
pub async fn record(
    virsh: &Virsh,
    vm: &str,
    intent: &Intent,
    live: bool,
) -> Result<(), VirshError> {
    let xml = intent.to_xml();
    let mut args = vec![
        "metadata", vm, "--uri", NS, "--key", KEY, "--set", &xml, "--config",
    ];
    if live {
        args.push("--live");
    }
    virsh.run(&args, virsh.timeout).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_domain_metadata() {
        let i = Intent {
            want: Want::Run,
            since: 1700000000,
            by: "ctl".into(),
            managed: true,
        };
        // What libvirt stores for `virsh metadata --key vmwarden --uri NS --set XML`.
        let xml = format!(
            "<domain><name>a</name><metadata><other xmlns='urn:x'/><vmwarden:vmwarden xmlns:vmwarden='{NS}'><vmwarden:intent state='run' since='1700000000' by='ctl'/></vmwarden:vmwarden></metadata></domain>"
        );
        // libvirt namespaces the children too; accept both spellings of the child.
        let got = Intent::from_domain_xml(&xml).map(|g| g.want);
        assert_eq!(got, Some(Want::Run));
        let xml2 = format!(
            "<domain><metadata><v:vmwarden xmlns:v='{NS}'><intent state='stop' managed='no'/></v:vmwarden></metadata></domain>"
        );
        let s = Intent::from_domain_xml(&xml2).unwrap();
        assert_eq!((s.want, s.managed, s.since), (Want::Stop, false, 0));
        assert_eq!(
            i.to_xml(),
            "<vmwarden><intent state=\"run\" since=\"1700000000\" by=\"ctl\"/></vmwarden>"
        );
        // Not ours, or a state we do not know: no intent.
        assert!(Intent::from_domain_xml("<domain><metadata><x:vmwarden xmlns:x='urn:other'><intent state='run'/></x:vmwarden></metadata></domain>").is_none());
        let bad = format!("<domain><metadata><v:vmwarden xmlns:v='{NS}'><intent state='maybe'/></v:vmwarden></metadata></domain>");
        assert!(Intent::from_domain_xml(&bad).is_none());
        assert!(Intent::from_domain_xml("<domain/>").is_none());
        assert!(Intent::from_domain_xml("not xml").is_none());
    }
}
