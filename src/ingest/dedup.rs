//! Finding duplicate keys in a source of any size with bounded memory.
//!
//! Two rows with the same period, reporter, partner, flow, product and region
//! would be summed together by every later query, so an ingest refuses them.
//! Each row's key is hashed to 128 bits (a collision among even 10^12 rows is
//! far less likely than a disk error). Entries are kept in 256 buckets by hash;
//! past a memory budget every bucket is appended to its own file, and at the end
//! each bucket is checked on its own with a hash map, so memory is bounded by
//! the budget plus one bucket.

use crate::error::{Error, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

const BUCKETS: usize = 256;
const ENTRY_BYTES: usize = 32;

/// Where a row went: its year file and its index in that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub year: i32,
    pub row: u64,
}

/// The keys are already uniform 128-bit hashes: their low bits are the hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[derive(Clone, Copy)]
struct KeyEntry {
    key: u128,
    line: u64,
    place: Place,
}

/// A row whose key an earlier row already had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub line: u64,
    pub first_line: u64,
    pub place: Place,
}

pub struct DuplicateCheck {
    buckets: Vec<Vec<KeyEntry>>,
    held: usize,
    budget: usize,
    spill_dir: PathBuf,
    spilled: bool,
}

impl DuplicateCheck {
    /// Keeps up to `budget_bytes` of entries in memory, then spills to `spill_dir`.
    pub fn new(spill_dir: PathBuf, budget_bytes: usize) -> Self {
        DuplicateCheck {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            held: 0,
            budget: (budget_bytes / ENTRY_BYTES).max(BUCKETS),
            spill_dir,
            spilled: false,
        }
    }

    pub fn add(&mut self, key: u128, line: u64, place: Place) -> Result<()> {
        self.buckets[(key >> 120) as usize].push(KeyEntry { key, line, place });
        self.held += 1;
        if self.held >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn bucket_path(&self, b: usize) -> PathBuf {
        self.spill_dir.join(format!("keys-{b:03}.bin"))
    }

    fn spill(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.spill_dir).map_err(|e| Error::io("cannot create", &self.spill_dir, e))?;
        for b in 0..BUCKETS {
            let entries = std::mem::take(&mut self.buckets[b]);
            if entries.is_empty() {
                continue;
            }
            let path = self.bucket_path(b);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io("cannot write", &path, e))?;
            let mut w = BufWriter::new(file);
            for e in &entries {
                let mut raw = [0u8; ENTRY_BYTES];
                raw[..16].copy_from_slice(&e.key.to_le_bytes());
                raw[16..24].copy_from_slice(&e.line.to_le_bytes());
                raw[24..28].copy_from_slice(&e.place.year.to_le_bytes());
                raw[28..32].copy_from_slice(&(e.place.row as u32).to_le_bytes());
                w.write_all(&raw).map_err(|e| Error::io("cannot write", &path, e))?;
            }
            w.flush().map_err(|e| Error::io("cannot write", &path, e))?;
        }
        self.held = 0;
        self.spilled = true;
        Ok(())
    }

    /// Every duplicate, by line; the row kept is always the first occurrence.
    pub fn finish(self) -> Result<Vec<Duplicate>> {
        let spilled = self.spilled;
        let paths: Vec<PathBuf> = (0..BUCKETS).map(|b| self.bucket_path(b)).collect();
        let mut found: Vec<Duplicate> = self
            .buckets
            .into_par_iter()
            .zip(paths.into_par_iter())
            .map(|(mut entries, path)| -> Result<Vec<Duplicate>> {
                if spilled && path.exists() {
                    // Spilled entries are the earlier lines: they go first.
                    let mut all = Vec::new();
                    read_bucket(&path, &mut all)?;
                    let _ = std::fs::remove_file(&path);
                    all.append(&mut entries);
                    entries = all;
                }
                // Entries arrive in line order (spilled ones first), so the
                // first line seen for a key is its first occurrence.
                let mut first: HashMap<u128, u64, BuildHasherDefault<KeyHasher>> =
                    HashMap::with_capacity_and_hasher(entries.len(), Default::default());
                let mut out = Vec::new();
                for e in &entries {
                    match first.entry(e.key) {
                        Entry::Occupied(o) => {
                            out.push(Duplicate { line: e.line, first_line: *o.get(), place: e.place })
                        }
                        Entry::Vacant(v) => {
                            v.insert(e.line);
                        }
                    }
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        found.sort_by_key(|d| d.line);
        Ok(found)
    }
}

fn read_bucket(path: &PathBuf, into: &mut Vec<KeyEntry>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let mut r = BufReader::new(file);
    let mut raw = [0u8; ENTRY_BYTES];
    loop {
        match r.read_exact(&mut raw) {
            Ok(()) => into.push(KeyEntry {
                key: u128::from_le_bytes(raw[..16].try_into().expect("16 bytes")),
                line: u64::from_le_bytes(raw[16..24].try_into().expect("8 bytes")),
                place: Place {
                    year: i32::from_le_bytes(raw[24..28].try_into().expect("4 bytes")),
                    row: u64::from(u32::from_le_bytes(raw[28..32].try_into().expect("4 bytes"))),
                },
            }),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(Error::io("cannot read", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(budget: usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut d = DuplicateCheck::new(dir.path().join("spill"), budget);
        for i in 0..10_000u64 {
            let key = u128::from(i % 9_990).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            d.add(key, i + 2, Place { year: 2024, row: i }).unwrap();
        }
        let dups = d.finish().unwrap();
        assert_eq!(dups.len(), 10);
        assert_eq!(dups[0], Duplicate { line: 9_992, first_line: 2, place: Place { year: 2024, row: 9_990 } });
    }

    #[test]
    fn finds_duplicates_in_memory() {
        check(1 << 30);
    }

    #[test]
    fn finds_duplicates_after_spilling() {
        check(4096 * ENTRY_BYTES);
    }
}
