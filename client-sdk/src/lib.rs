//! Baton's Rust SDK.
//!
//! - [`proto`]: the generated gRPC contract (`baton.v1`), the source of truth
//!   for every client language.
//!
//! This crate knows nothing about Raft internals: it speaks only the public API.

/// Generated from `proto/baton/v1/baton.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("baton.v1");

    /// Encoded `FileDescriptorSet` of the public API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/baton_descriptor.bin"));
}
