//! A broken or absent source is reported once, not on every scrape, while the counters keep counting.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vmwarden::collect::{Collector, Outcome};
use vmwarden::config::Config;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn absent_and_malformed_sources_are_logged_once_and_counted_every_time() {
    let fixture = format!(
        "{}/tests/fixtures/drbd/proc84_malformed.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let cfg = Config::from_toml_str(
        &format!(
            "[drbd]\nproc_path = \"{fixture}\"\n\
             [lvm]\nlvm = \"/nonexistent/lvm\"\nlvmlockctl = \"/nonexistent/lvmlockctl\"\n\
             [sanlock]\nsanlock = \"/nonexistent/sanlock\"\n[libvirt]\nenabled = false\n"
        ),
        "test",
    )
    .unwrap();
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let collector = Collector::new(cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..3 {
            let snap = rt.block_on(collector.collect());
            assert!(
                matches!(snap.drbd.outcome, Outcome::Ok(_)),
                "the good minors still count"
            );
            assert!(matches!(snap.lvm.outcome, Outcome::Absent(_)));
        }
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("collector=\"lvm\""), 1, "{text}");
    assert_eq!(count("collector=\"sanlock\""), 1, "{text}");
    let drbd_errors = collector
        .counters()
        .parse_errors
        .iter()
        .find(|(c, _)| *c == "drbd")
        .map(|(_, n)| *n)
        .unwrap();
    assert!(
        drbd_errors > 0 && drbd_errors % 3 == 0,
        "counted on every scrape: {drbd_errors}"
    );
    // Each distinct parse problem is logged once, however often it is met.
    assert_eq!(
        count("collector=\"drbd\"") as u64,
        drbd_errors / 3,
        "{text}"
    );
}
