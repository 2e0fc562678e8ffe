//! A tamper-evident audit trail: signed, chained digests of each tenant's audit events per hour
//! window, and their verification.
//!
//! - [`hash`]: the canonical hash of a stored event row, and the Merkle root of a set.
//! - [`manifest`]: the events a digest covers (id, time, hash).
//! - [`digest`]: digest documents, the Ed25519 signing key, published public keys.
//! - [`window`]: the events of one hour window, read from the table's files.
//! - [`digester`]: writes digests (one server, by lease).
//! - [`verify`](mod@verify): checks digests and recomputes what they cover.

pub mod digest;
pub mod digester;
pub mod hash;
pub mod manifest;
pub mod verify;
pub mod window;
