//! Owned by the record-batch work; placeholder.
