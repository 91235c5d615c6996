//! The contract's capability interfaces, read from its WIT: those whose
//! calls can be denied (they use the contract's `error`), unlike `log`
//! and `history`, which every step has. The fake host checks `deny()`
//! against them, so a new capability needs no list kept here.

use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=wit");
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir("wit")
        .expect("the SDK's `wit` directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wit"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("a WIT file");
        let mut current: Option<&str> = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("interface ") {
                current = rest.split_whitespace().next();
            } else if let Some(name) = current
                && line.starts_with("use types.{")
                && line.contains("error")
                && !names.contains(&name.to_string())
            {
                names.push(name.to_string());
            }
        }
    }
    let mut out = String::from("/// The capability interfaces, by WIT name (from `wit/`).\n");
    writeln!(out, "pub const INTERFACES: &[&str] = &{names:?};").unwrap();
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("interfaces.rs");
    std::fs::write(dest, out).unwrap();
}
