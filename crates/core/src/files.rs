//! Reading input files safely: only regular files (a FIFO would hang the
//! reader, `/dev/zero` would never end), never more than a cap, and text
//! must be UTF-8, with the byte offset of the first bad byte when not.

use crate::error::hinted;
use anyhow::Result;
use std::io::Read;
use std::path::Path;

/// Largest runbook, manifest, scenario or environment file.
pub const MAX_TEXT: u64 = 1024 * 1024;
/// Largest component file.
pub const MAX_COMPONENT: u64 = 256 * 1024 * 1024;

/// The bytes of regular file `path`, at most `max` of them; `what` names
/// the file in errors (`manifest`, `component`, ...).
pub fn read_bytes(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    // Non-blocking: opening a FIFO must not wait for a writer; it is
    // refused below as not a regular file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| anyhow::Error::new(e).context(format!("reading {what} `{shown}`")))?;
    let meta = file
        .metadata()
        .map_err(|e| anyhow::Error::new(e).context(format!("reading {what} `{shown}`")))?;
    if !meta.is_file() {
        return Err(hinted(
            format!("{what} `{shown}` is not a regular file"),
            format!("point at the {what} file itself, not a device, pipe or directory"),
        ));
    }
    if meta.len() > max {
        return Err(hinted(
            format!(
                "{what} `{shown}` is {} bytes; at most {max} are read",
                meta.len()
            ),
            format!("is `{shown}` really the {what} meant?"),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::Error::new(e).context(format!("reading {what} `{shown}`")))?;
    if bytes.len() as u64 > max {
        return Err(hinted(
            format!("{what} `{shown}` grew past {max} bytes while it was read"),
            "try again once nothing writes to it",
        ));
    }
    Ok(bytes)
}

/// The text of regular file `path`, at most [`MAX_TEXT`] bytes of UTF-8.
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    read_text_capped(path, what, MAX_TEXT)
}

/// [`read_text`], at most `max` bytes.
pub fn read_text_capped(path: &Path, what: &str, max: u64) -> Result<String> {
    let bytes = read_bytes(path, what, max)?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let (line, column) = line_column(&e.as_bytes()[..at]);
        hinted(
            format!(
                "{what} `{}` is not UTF-8: invalid byte at offset {at} (line {line}, column {column})",
                path.display()
            ),
            "save the file as UTF-8",
        )
    })
}

/// 1-based line and column of the end of `before`.
pub fn line_column(before: &[u8]) -> (usize, usize) {
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.len()
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, column)
}

/// Makes a file created or renamed in `dir` durable: the directory's entry
/// reaches the disk (fsync of the directory), not only the file's bytes.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_text(&fifo, "manifest").unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
    }

    #[test]
    fn devices_and_oversized_files_are_refused() {
        let err = read_bytes(Path::new("/dev/zero"), "component", MAX_COMPONENT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'a'; MAX_TEXT as usize + 1]).unwrap();
        let err = read_text(&big, "scenario").unwrap_err().to_string();
        assert!(err.contains("at most 1048576 are read"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.md");
        std::fs::write(&bad, b"---\nab\xffc\n").unwrap();
        let err = read_text(&bad, "runbook").unwrap_err().to_string();
        assert!(
            err.ends_with("is not UTF-8: invalid byte at offset 6 (line 2, column 3)"),
            "{err}"
        );
    }
}
