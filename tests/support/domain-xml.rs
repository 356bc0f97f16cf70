//! The tiny OS-less qemu guest the libvirt tests define: 64 MiB, one vCPU, one raw file disk; the
//! BIOS finds nothing to boot and waits. Included with `#[path]` by the support modules.

use std::path::Path;

/// `cache`: the disk's cache mode (`Some("none")` for a guest that live-migrates between hosts);
/// `nic`: an ethernet interface (for the network stats collectors).
pub fn os_less_domain(
    ty: &str,
    name: &str,
    uuid: Option<&str>,
    disk: &Path,
    cache: Option<&str>,
    nic: bool,
) -> String {
    let uuid = uuid
        .map(|u| format!("\n  <uuid>{u}</uuid>"))
        .unwrap_or_default();
    let cache = cache.map(|c| format!(" cache='{c}'")).unwrap_or_default();
    let nic = if nic {
        "\n    <interface type='ethernet'>\n      <model type='virtio'/>\n    </interface>"
    } else {
        ""
    };
    format!(
        "<domain type='{ty}'>
  <name>{name}</name>{uuid}
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'{cache}/>
      <source file='{}'/>
      <target dev='vda' bus='virtio'/>
    </disk>{nic}
    <serial type='pty'/>
  </devices>
</domain>
",
        disk.display()
    )
}
