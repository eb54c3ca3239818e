//! The backup files `berth backup` writes (gzip'd SQL dumps), as the backup tests read
//! them.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Run;

/// The path `berth backup` printed (`backup: PATH (SIZE)`).
pub fn printed_path(run: &Run) -> PathBuf {
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("backup: "))
        .unwrap_or_else(|| panic!("no backup line in {:?}", run.stdout));
    PathBuf::from(line.rsplit_once(" (").unwrap().0)
}

/// The dump's text.
pub fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}
