//! The history of one run: every client operation and every fault, in the order the harness
//! saw them complete, kept in memory for the checker and appended to a JSON-lines file so a
//! failed run can be studied afterwards.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How a reader reads: `read_committed` hides aborted transactions' records and stops at the
/// last stable offset; `read_uncommitted` sees everything below the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    ReadCommitted,
    ReadUncommitted,
}

/// How a transaction ended, as its producer was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOutcome {
    Committed,
    Aborted,
    /// The commit or abort failed in a way that leaves the outcome open (a timeout, a fenced
    /// producer): either is allowed.
    Unknown,
}

/// One entry of the history. `t_ms` is milliseconds since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A producer handed a record to its client. `producer` names one producer instance (a
    /// recreated producer gets a new name), so its sends are in send order.
    Send {
        t_ms: u64,
        producer: String,
        topic: String,
        partition: i32,
        value: String,
        transactional: bool,
    },
    /// The broker acknowledged the record at `offset` (acks=all).
    Ack {
        t_ms: u64,
        producer: String,
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// The client gave up on the record: it may or may not have been written (indeterminate).
    SendFailed {
        t_ms: u64,
        producer: String,
        topic: String,
        partition: i32,
        value: String,
        error: String,
    },
    /// A transaction ended; `values` are every record sent in it.
    TxnEnd {
        t_ms: u64,
        producer: String,
        outcome: TxnOutcome,
        values: Vec<String>,
    },
    /// A reader saw `value` at `offset`. `final_read` marks the last full read of the run, from
    /// offset 0 to the high watermark, made after every fault was healed.
    Read {
        t_ms: u64,
        reader: String,
        isolation: Isolation,
        final_read: bool,
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// A final read covered this partition up to `end_offset` (exclusive): what it did not
    /// return below that is missing.
    FinalReadEnd {
        t_ms: u64,
        reader: String,
        isolation: Isolation,
        topic: String,
        partition: i32,
        end_offset: i64,
    },
    /// An offset commit of a consumer group was acknowledged.
    CommitAcked {
        t_ms: u64,
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// The group's committed offset as read back at the end of the run.
    CommittedFetched {
        t_ms: u64,
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A fault began (`kind` names it, `target` says where).
    Fault {
        t_ms: u64,
        kind: String,
        target: String,
    },
    /// A client hit an error worth studying that is not about one record (a fatal producer
    /// error, a failed transaction call).
    ClientError { t_ms: u64, error: String },
    /// The fault that began last was healed.
    Healed { t_ms: u64, kind: String },
}

/// Appends events to memory and to a JSON-lines file; shared by every client thread.
pub struct History {
    started: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    events: Vec<Event>,
    file: Option<BufWriter<File>>,
    /// The first write error: the run goes on (the checker has the events in memory) but the
    /// report says the file is incomplete.
    file_error: Option<String>,
}

impl History {
    /// A history written to `path` as well, if given.
    pub fn new(path: Option<&Path>) -> std::io::Result<History> {
        let file = match path {
            Some(p) => Some(BufWriter::new(File::create(p)?)),
            None => None,
        };
        Ok(History {
            started: Instant::now(),
            inner: Mutex::new(Inner {
                events: Vec::new(),
                file,
                file_error: None,
            }),
        })
    }

    /// Milliseconds since the run started: the `t_ms` of a new event.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn record(&self, event: Event) {
        let mut inner = self.inner.lock().expect("history lock poisoned");
        if let Some(file) = inner.file.as_mut() {
            // Flushed line by line: a run that ends in a harness error, a panic or a kill
            // still leaves a file whose every line parses, so `weir-chaos check` reads it.
            let written = serde_json::to_writer(&mut *file, &event)
                .map_err(std::io::Error::from)
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.flush());
            if let Err(e) = written {
                inner.file_error.get_or_insert(e.to_string());
            }
        }
        inner.events.push(event);
    }

    /// Flushes the file and returns a copy of every event so far.
    pub fn snapshot(&self) -> Vec<Event> {
        let mut inner = self.inner.lock().expect("history lock poisoned");
        if let Some(file) = inner.file.as_mut()
            && let Err(e) = file.flush()
        {
            inner.file_error.get_or_insert(e.to_string());
        }
        inner.events.clone()
    }

    /// Why the history file is incomplete, if it is.
    pub fn file_error(&self) -> Option<String> {
        self.inner
            .lock()
            .expect("history lock poisoned")
            .file_error
            .clone()
    }
}

/// Reads a history file written by [`History`], to check it again offline.
pub fn read_file(path: &Path) -> std::io::Result<Vec<Event>> {
    let reader = BufReader::new(File::open(path)?);
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {}: {e}", i + 1),
            )
        })?;
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that dies (a harness error, a panic, kill -9 of the harness) must leave a file
    /// that `weir-chaos check` reads: every recorded event is on disk as a whole line at
    /// once, without waiting for a snapshot or a drop.
    #[test]
    fn every_recorded_event_is_on_disk_as_a_whole_line_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let history = History::new(Some(&path)).unwrap();
        for i in 0..3 {
            history.record(Event::ClientError {
                t_ms: i,
                error: "x".repeat(5_000),
            });
        }
        let on_disk = read_file(&path).unwrap();
        assert_eq!(on_disk.len(), 3);
        assert_eq!(history.file_error(), None);
        drop(history);
    }
}
