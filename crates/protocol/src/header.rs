//! Owned by the codec generator work; placeholder.
