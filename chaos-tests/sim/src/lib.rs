//! Baton's deterministic simulation tier (work in progress).
