//! The backup file format: round trip, and every kind of damage found.

use std::collections::BTreeMap;

use openraft::{CommittedLeaderId, Membership};

use super::*;
use crate::types::NodeInfo;

fn header() -> BackupHeader {
    let nodes = BTreeMap::from([(1u64, NodeInfo { raft_addr: "a:1".into(), ..Default::default() })]);
    let log_id = LogId::new(CommittedLeaderId::new(3, 1), 42);
    BackupHeader {
        cluster_id: ClusterId(7),
        last_applied: Some(log_id),
        membership: StoredMembership::new(Some(log_id), Membership::new(vec![[1u64].into()], nodes)),
        state_hash: [9; 32],
        taken_at_ms: 1_700_000_000_000,
    }
}

fn file() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    w.record(b"k1", b"v1").unwrap();
    w.record(b"k2", &[7u8; 3000]).unwrap();
    w.record(b"k3", b"").unwrap();
    let (bytes, n) = w.finish().unwrap();
    assert_eq!(n, 3);
    bytes
}

/// Read a whole file; the first error, or the records.
fn read_all(bytes: &[u8]) -> Result<(BackupHeader, Vec<Record>), StoreError> {
    let (mut r, h) = Reader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok((h, out))
}

#[test]
fn round_trip() {
    let (h, records) = read_all(&file()).unwrap();
    assert_eq!(h, header());
    assert_eq!(records.len(), 3);
    assert_eq!(records[0], (b"k1".to_vec(), b"v1".to_vec()));
    assert_eq!(records[1].1.len(), 3000);
    assert_eq!(records[2], (b"k3".to_vec(), Vec::new()));
}

#[test]
fn every_flipped_byte_is_detected() {
    let bytes = file();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert!(read_all(&bad).is_err(), "a flipped bit at byte {i} of {} went unnoticed", bytes.len());
    }
}

#[test]
fn a_changed_record_fails_the_checksum() {
    let bytes = file();
    let at = bytes.windows(2).position(|w| w == b"v1").unwrap();
    let mut bad = bytes.clone();
    bad[at] = b'w';
    let err = read_all(&bad).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn a_changed_header_fails_the_checksum() {
    let bytes = file();
    // The taken_at_ms field is the header's last 8 bytes; any value decodes.
    let header_end = 13 + u32::from_le_bytes(bytes[9..13].try_into().unwrap()) as usize;
    let mut bad = bytes.clone();
    bad[header_end - 1] ^= 1;
    let err = read_all(&bad).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn every_truncation_is_detected_and_named() {
    let bytes = file();
    for len in 0..bytes.len() {
        let err = read_all(&bytes[..len]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "cut at {len} of {}: {err}", bytes.len());
    }
}

#[test]
fn trailing_bytes_and_foreign_files_are_refused() {
    let mut long = file();
    long.push(0);
    let err = read_all(&long).unwrap_err().to_string();
    assert!(err.contains("after the checksum"), "{err}");

    let err = read_all(b"BATONSNP\x01\x00\x00\x00\x00").unwrap_err().to_string();
    assert!(err.contains("not a Baton backup"), "{err}");

    let mut other_version = file();
    other_version[8] = BACKUP_VERSION + 1;
    let err = read_all(&other_version).unwrap_err().to_string();
    assert!(err.contains("backup version"), "{err}");
}

#[test]
fn verify_reads_a_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bak");
    std::fs::write(&path, file()).unwrap();
    assert_eq!(verify(&path).unwrap(), (header(), 3));
    std::fs::write(&path, &file()[..20]).unwrap();
    assert!(verify(&path).unwrap_err().to_string().contains("truncated"));
}
