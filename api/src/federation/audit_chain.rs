//! The pure core of the audit trail's integrity: how a row, a checkpoint and a head record are
//! authenticated, and the walk that checks a chain of rows. No I/O; `audit.rs` reads the rows
//! and feeds them here.
//!
//! Rows from `keyed_from` on carry an HMAC-SHA256 under [`AuditKey`], a key derived from the
//! key-encryption key that never enters the database: whoever can only write to the database
//! can no longer recompute the chain after changing, inserting or deleting a row, nor forge a
//! checkpoint. Rows written before the upgrade that introduced the key (ids below
//! `keyed_from`) keep their plain SHA-256 hashes and are verified as before. What the key alone
//! cannot show is rows cut off the end together with the head; the head printed by
//! `novads audit verify` and logged by the server, kept outside the database, shows that
//! (`--expect-head`).

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::{digest, hmac};

use crate::oidc::keys::{KeyEncryptionKey, KeyError, MacPurpose};

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The key that authenticates the audit chain, derived from the key-encryption key.
#[derive(Clone)]
pub struct AuditKey {
    key: hmac::Key,
}

impl AuditKey {
    pub fn from_kek(kek: &KeyEncryptionKey) -> Result<Self, KeyError> {
        Ok(Self {
            key: kek.derive_mac_key(MacPurpose::AuditChain)?,
        })
    }

    /// The key of the configured key-encryption key.
    pub fn configured(server: &crate::config::ServerConfig) -> Result<Self, KeyError> {
        Self::from_kek(&KeyEncryptionKey::configured(server)?)
    }

    /// Hex HMAC-SHA256 of `input`.
    pub fn mac(&self, input: &[u8]) -> String {
        hex(hmac::sign(&self.key, input).as_ref())
    }

    /// Whether `mac` (hex) authenticates `input`, in constant time.
    pub fn verify(&self, input: &[u8], mac: &str) -> bool {
        decode_hex(mac).is_some_and(|tag| hmac::verify(&self.key, input, &tag).is_ok())
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// How the row with `id` is hashed: keyed from the marked row on, plain SHA-256 before it.
/// (The writer always keys: its rows lie past the mark.)
#[cfg(test)]
fn row_hash(key: &AuditKey, keyed_from: i64, id: i64, input: &[u8]) -> String {
    if id >= keyed_from {
        key.mac(input)
    } else {
        hex(digest::digest(&digest::SHA256, input).as_ref())
    }
}

/// Whether `hash` is the right hash of the row with `id` and content `input`.
fn row_hash_matches(key: &AuditKey, keyed_from: i64, id: i64, input: &[u8], hash: &str) -> bool {
    if id >= keyed_from {
        key.verify(input, hash)
    } else {
        hex(digest::digest(&digest::SHA256, input).as_ref()) == hash
    }
}

/// A checkpoint left by pruning: verification starts after `through_id`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Checkpoint {
    pub pruned_at: String,
    pub through_id: i64,
    pub through_hash: String,
    /// Absent on checkpoints written before the chain was keyed.
    pub mac: Option<String>,
}

impl Checkpoint {
    /// The one MAC input of a checkpoint.
    fn mac_input(pruned_at: &str, through_id: i64, through_hash: &str) -> Vec<u8> {
        serde_json::json!(["checkpoint", pruned_at, through_id, through_hash])
            .to_string()
            .into_bytes()
    }

    /// A checkpoint authenticated under `key`.
    pub fn sealed(
        key: &AuditKey,
        pruned_at: String,
        through_id: i64,
        through_hash: String,
    ) -> Self {
        let mac = key.mac(&Self::mac_input(&pruned_at, through_id, &through_hash));
        Self {
            pruned_at,
            through_id,
            through_hash,
            mac: Some(mac),
        }
    }

    /// Why this checkpoint cannot be trusted as a starting point, if it cannot. A checkpoint
    /// without a MAC is believed only inside the rows written before the chain was keyed.
    fn problem(&self, key: &AuditKey, keyed_from: i64) -> Option<String> {
        let input = Self::mac_input(&self.pruned_at, self.through_id, &self.through_hash);
        match &self.mac {
            Some(mac) if key.verify(&input, mac) => None,
            None if self.through_id < keyed_from => None,
            Some(_) => Some(format!(
                "the checkpoint through row {} is not authenticated by the key (it was forged or \
                 altered, or the key-encryption key is not the one the trail was written with)",
                self.through_id
            )),
            None => Some(format!(
                "the checkpoint through row {} carries no MAC but lies in the keyed part of the \
                 chain (it was forged)",
                self.through_id
            )),
        }
    }
}

/// A position in the chain: a row's id and hash. Printed and parsed as `ID:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub id: i64,
    pub hash: String,
}

impl fmt::Display for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.hash)
    }
}

impl FromStr for ChainHead {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a chain head: expected ID:HASH (64 hex digits)");
        let (id, hash) = text.trim().split_once(':').ok_or_else(bad)?;
        let id: i64 = id.parse().map_err(|_| bad())?;
        if id < 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self {
            id,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl ChainHead {
    /// The MAC input of a head record the server logs at `at`.
    fn record_input(&self, at: &str) -> Vec<u8> {
        serde_json::json!(["head", at, self.id, self.hash])
            .to_string()
            .into_bytes()
    }

    /// The MAC of a head record logged at `at`.
    pub fn record_mac(&self, key: &AuditKey, at: &str) -> String {
        key.mac(&self.record_input(at))
    }

    /// Whether a logged head record is authentic.
    pub fn record_is_authentic(&self, key: &AuditKey, at: &str, mac: &str) -> bool {
        key.verify(&self.record_input(at), mac)
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The row where the problem shows; for rows missing at the end, the last row present.
    pub id: i64,
    pub problem: String,
}

/// One row as the walk sees it: id, the MAC input built from its content, `prev_hash`, `hash`.
pub struct ChainRow<'a> {
    pub id: i64,
    pub input: &'a [u8],
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

/// Walks the chain row by row from a start (genesis or an accepted checkpoint).
pub struct ChainWalk<'k> {
    key: &'k AuditKey,
    keyed_from: i64,
    expect: Option<ChainHead>,
    prev: ChainHead,
    /// Rows whose hashes were checked.
    pub rows_checked: u64,
}

impl<'k> ChainWalk<'k> {
    /// Starts after `checkpoint` (or at genesis). A checkpoint that cannot be trusted, or an
    /// expected head that lies before the start and so can no longer be checked, is a break.
    pub fn start(
        key: &'k AuditKey,
        keyed_from: i64,
        checkpoint: Option<&Checkpoint>,
        expect: Option<ChainHead>,
    ) -> Result<Self, BrokenLink> {
        let prev = match checkpoint {
            None => ChainHead {
                id: 0,
                hash: GENESIS_HASH.to_owned(),
            },
            Some(checkpoint) => {
                if let Some(problem) = checkpoint.problem(key, keyed_from) {
                    return Err(BrokenLink {
                        id: checkpoint.through_id,
                        problem,
                    });
                }
                ChainHead {
                    id: checkpoint.through_id,
                    hash: checkpoint.through_hash.clone(),
                }
            }
        };
        if let Some(expected) = &expect {
            if expected.id < prev.id {
                return Err(BrokenLink {
                    id: prev.id,
                    problem: format!(
                        "the expected head, row {}, was pruned (the trail now starts after row \
                         {}); it can no longer be checked",
                        expected.id, prev.id
                    ),
                });
            }
            if expected.id == prev.id && expected.hash != prev.hash {
                return Err(BrokenLink {
                    id: prev.id,
                    problem: "the checkpoint's hash differs from the expected head".into(),
                });
            }
        }
        Ok(Self {
            key,
            keyed_from,
            expect,
            prev,
            rows_checked: 0,
        })
    }

    /// Checks the next row.
    pub fn next(&mut self, row: &ChainRow<'_>) -> Result<(), BrokenLink> {
        let broken = |problem: String| BrokenLink {
            id: row.id,
            problem,
        };
        if row.id != self.prev.id + 1 {
            return Err(broken(format!(
                "rows {} to {} are missing",
                self.prev.id + 1,
                row.id - 1
            )));
        }
        if row.prev_hash != self.prev.hash {
            return Err(broken(
                "prev_hash does not match the previous row's hash".into(),
            ));
        }
        if !row_hash_matches(self.key, self.keyed_from, row.id, row.input, row.hash) {
            return Err(broken(
                "content does not match its hash (the row was changed)".into(),
            ));
        }
        if let Some(expected) = &self.expect
            && expected.id == row.id
            && expected.hash != row.hash
        {
            return Err(broken(
                "the row differs from the expected head (the trail was rewritten)".into(),
            ));
        }
        self.rows_checked += 1;
        self.prev = ChainHead {
            id: row.id,
            hash: row.hash.to_owned(),
        };
        Ok(())
    }

    /// Ends the walk against the stored head; returns the head the walk reached.
    pub fn finish(self, stored_head: &ChainHead) -> Result<ChainHead, BrokenLink> {
        if *stored_head != self.prev {
            return Err(BrokenLink {
                id: self.prev.id,
                problem: format!(
                    "the chain head is row {} but the last row is {} (rows were removed from the end)",
                    stored_head.id, self.prev.id
                ),
            });
        }
        if let Some(expected) = &self.expect
            && expected.id > self.prev.id
        {
            return Err(BrokenLink {
                id: self.prev.id,
                problem: format!(
                    "the trail ends at row {}, before the expected head, row {} (rows were \
                     removed from the end)",
                    self.prev.id, expected.id
                ),
            });
        }
        Ok(self.prev)
    }
}

/// Lower-case hex (every audit row's hash and MAC): no per-byte formatting.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    ::hex::decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AuditKey {
        AuditKey::from_kek(&KeyEncryptionKey::from_bytes([byte; 32])).expect("key")
    }

    #[test]
    fn rows_before_the_mark_keep_plain_sha256_and_rows_after_it_are_keyed() {
        let k = key(1);
        let plain = row_hash(&k, 5, 4, b"content");
        assert_eq!(
            plain,
            hex(digest::digest(&digest::SHA256, b"content").as_ref())
        );
        let keyed = row_hash(&k, 5, 5, b"content");
        assert_ne!(keyed, plain);
        assert_ne!(
            keyed,
            row_hash(&key(2), 5, 5, b"content"),
            "another key, another hash"
        );
        assert!(row_hash_matches(&k, 5, 5, b"content", &keyed));
        // A database writer recomputing plain SHA-256 over a keyed row is caught.
        assert!(!row_hash_matches(&k, 5, 5, b"content", &plain));
    }

    #[test]
    fn checkpoints_need_the_key_in_the_keyed_part() {
        let k = key(1);
        let sealed = Checkpoint::sealed(&k, "2026-01-01T00:00:00.000000Z".into(), 9, "ab".into());
        assert_eq!(sealed.problem(&k, 3), None);
        assert!(sealed.problem(&key(2), 3).is_some(), "another key");
        let mut moved = sealed.clone();
        moved.through_id = 10;
        assert!(moved.problem(&k, 3).is_some(), "altered");
        let unsigned = Checkpoint {
            mac: None,
            ..sealed
        };
        assert!(
            unsigned.problem(&k, 3).is_some(),
            "no MAC in the keyed part"
        );
        assert_eq!(unsigned.problem(&k, 10), None, "no MAC before the mark");
    }

    #[test]
    fn heads_parse_and_print_as_id_colon_hash() {
        let hash = "a".repeat(64);
        let head: ChainHead = format!("42:{}", hash.to_uppercase())
            .parse()
            .expect("parses");
        assert_eq!(head.to_string(), format!("42:{hash}"));
        for bad in [
            "42",
            "x:aa",
            &format!("-1:{hash}"),
            "42:abc",
            &format!("42:{}", "g".repeat(64)),
        ] {
            assert!(bad.parse::<ChainHead>().is_err(), "{bad}");
        }
        let k = key(1);
        let mac = head.record_mac(&k, "2026-12-05T00:00:00Z");
        assert!(head.record_is_authentic(&k, "2026-12-05T00:00:00Z", &mac));
        assert!(!head.record_is_authentic(&k, "2026-12-05T00:00:01Z", &mac));
    }

    #[test]
    fn a_walk_names_missing_changed_and_unexpected_rows() {
        let k = key(1);
        let rows: Vec<(i64, Vec<u8>)> = (1..=3)
            .map(|id| (id, format!("row {id}").into_bytes()))
            .collect();
        let mut hashes = vec![GENESIS_HASH.to_owned()];
        for (id, input) in &rows {
            hashes.push(row_hash(&k, 1, *id, input));
        }
        let walk_all = |expect: Option<ChainHead>| {
            let mut walk = ChainWalk::start(&k, 1, None, expect)?;
            for (i, (id, input)) in rows.iter().enumerate() {
                walk.next(&ChainRow {
                    id: *id,
                    input,
                    prev_hash: &hashes[i],
                    hash: &hashes[i + 1],
                })?;
            }
            walk.finish(&ChainHead {
                id: 3,
                hash: hashes[3].clone(),
            })
        };
        let head = walk_all(None).expect("intact");
        assert_eq!(head.id, 3);
        assert_eq!(walk_all(Some(head.clone())), Ok(head.clone()));
        let earlier = ChainHead {
            id: 2,
            hash: hashes[2].clone(),
        };
        assert_eq!(
            walk_all(Some(earlier)),
            Ok(head),
            "a later head extends an earlier one"
        );
        let rewritten = ChainHead {
            id: 2,
            hash: "b".repeat(64),
        };
        assert_eq!(walk_all(Some(rewritten)).expect_err("rewritten").id, 2);
        let beyond = ChainHead {
            id: 7,
            hash: "b".repeat(64),
        };
        let broken = walk_all(Some(beyond)).expect_err("cut off");
        assert!(
            broken.problem.contains("before the expected head"),
            "{broken:?}"
        );
    }
}
