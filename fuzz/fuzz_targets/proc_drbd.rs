//! `/proc/drbd` (DRBD 8.x): parse, then render the metrics as the agent does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::metrics::Registry;
use vmwarden::probe::drbd::parse_proc_drbd;
use vmwarden_fuzz::{assert_ratio, assert_valid_metrics};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_proc_drbd(&text);
    for v in &parsed.value.volumes {
        for p in &v.peers {
            if let Some(r) = &p.resync {
                assert_ratio("done_ratio", r.done_ratio);
            }
        }
    }
    // A cut last line is never taken as data (issue 16 part 3): an input whose tail after the
    // last newline is more than blanks and NULs reads the same as the input without that tail.
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    if !text[end..]
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .is_empty()
    {
        let whole = parse_proc_drbd(&text[..end]);
        assert_eq!(
            parsed.value, whole.value,
            "a cut last line changed what was read"
        );
    }
    let mut reg = Registry::default();
    vmwarden::metrics::drbd::encode(&mut reg, &parsed.value);
    assert_valid_metrics(&reg);
});
