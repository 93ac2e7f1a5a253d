//! Bugs planted on purpose, test builds only, to prove that the property
//! tests can fail: each test that enables one expects its property to break.
//! The switch is per thread, so other tests running in parallel are not
//! affected.

use std::cell::Cell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Leader election ignores fencing: a fenced ISR member can be elected.
    ElectFencedLeaders,
    /// Snapshots forget the next producer id.
    SnapshotForgetsProducerIds,
    /// Every topic allows unclean leader election, whatever its config says.
    UncleanWithoutConfig,
    /// Fencing empties an ISR instead of keeping its last member.
    ShrinkIsrToEmpty,
}

thread_local! {
    static PLANTED: Cell<Option<Bug>> = const { Cell::new(None) };
}

pub fn is(bug: Bug) -> bool {
    PLANTED.with(|p| p.get() == Some(bug))
}

/// Runs `f` with `bug` planted.
pub fn with<T>(bug: Bug, f: impl FnOnce() -> T) -> T {
    PLANTED.with(|p| p.set(Some(bug)));
    let out = f();
    PLANTED.with(|p| p.set(None));
    out
}
