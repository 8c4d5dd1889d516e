//! The apply core's former home, split into [`crate::kv`], [`crate::indexes`]
//! and [`crate::core`]. Re-exports keep `baton_raft_store::state::...` paths
//! written before the split compiling; new code uses the crate root.

pub use crate::core::*;
pub use crate::indexes::*;
pub use crate::kv::*;
