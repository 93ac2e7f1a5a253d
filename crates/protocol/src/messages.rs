//! Request and response types for every API Weir serves, generated at build
//! time by `build.rs` from `schemas/*.wire` (format: `schemas/FORMAT.md`).
//!
//! Each schema file becomes one module, e.g. [`produce`] holds
//! `ProduceRequest`, `ProduceResponse` and their nested structs. Every type
//! implements [`crate::codec::Encode`] and [`crate::codec::Decode`] at any
//! version of its message; the top-level request and response also implement
//! [`crate::codec::Message`].
//!
//! Why a build script rather than a committed generator output: the schemas
//! and the generator live together in this crate, so the Rust types are always
//! exactly what the schemas say, and there is no generated code in the tree to
//! drift, review or merge.

include!(concat!(env!("OUT_DIR"), "/messages.rs"));
