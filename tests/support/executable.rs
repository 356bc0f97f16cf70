//! One helper shared by every test crate that writes stand-in commands (included by path where
//! a crate does not use `support`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Write `text` to `path` as an executable file, without this process ever holding it open for
/// writing. Tests run on many threads: a file written here with `std::fs::write` is open for
/// writing while another test thread forks, and that child keeps the descriptor until it execs,
/// so running the file at that moment fails with ETXTBSY ("Text file busy"; CI hit it once in
/// lvm_probe). The text goes to a plain side file and `install` (its own process, which forks
/// nothing) writes the executable.
pub fn executable(path: &Path, text: &str) -> PathBuf {
    let mut src = path.as_os_str().to_owned();
    src.push(".src");
    let src = PathBuf::from(src);
    std::fs::write(&src, text).unwrap();
    let st = Command::new("install")
        .arg("-m")
        .arg("0755")
        .arg(&src)
        .arg(path)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "install {} {}: {st}",
        src.display(),
        path.display()
    );
    let _ = std::fs::remove_file(&src);
    path.to_path_buf()
}
