//! The responses a client is owed, in the order it asked for them.
//!
//! A client may pipeline requests that evshift sends to different stores, or answers itself
//! (a deferred BEGIN). `PendingQueue` keeps one entry per routed unit; only the entry at the
//! head may deliver bytes to the client, so responses arrive in request order whatever store
//! answers first. Messages evshift injected on a store (a replayed Parse, a deferred BEGIN) are
//! answered too, and those answers are swallowed here.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::wire::{Frame, FrameError};

/// An answer from a store that the client must not see, because evshift asked the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swallow {
    /// The ParseComplete of a replayed Parse.
    ParseComplete,
    /// The BindComplete of an injected Bind.
    BindComplete,
    /// The CloseComplete of an injected Close.
    CloseComplete,
    /// The CommandComplete of an injected Execute.
    CommandComplete,
    /// Everything up to and including the ReadyForQuery of an injected simple Query
    /// (BEGIN, replayed SETs). Errors and notices still reach the client.
    UntilReady,
}

/// Something to do once a unit completed without an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Remember a session-level SET so that it is replayed on other stores.
    RecordSet(String),
    /// Events of a tenant in DUAL_WRITE that the unit inserted on the migration's source.
    Inserted(evshift_control::dual_write::DualWriteRoute, Vec<uuid::Uuid>),
}

/// A routed unit whose answers come from one store.
#[derive(Debug)]
pub struct BackendEntry {
    pub store: usize,
    pub swallow: VecDeque<Swallow>,
    /// ReadyForQuery messages that end this unit (one per Sync or Query sent).
    pub readies_expected: u32,
    pub readies_seen: u32,
    /// An extended-protocol batch sent at Flush: more of it (and its Sync) may follow.
    pub open: bool,
    pub saw_error: bool,
    pub effects: Vec<Effect>,
    /// The transaction status the client must see in this unit's ReadyForQuery, when it is not
    /// the store's: a unit run outside the client's deferred transaction reports 'I' on the
    /// store while the client is in a transaction ('T').
    pub status_override: Option<u8>,
    /// ReadyForQuery messages answering Syncs evshift added at the end of this unit; they are
    /// swallowed after everything the client is owed.
    pub extra_readies: u32,
    /// The unit executed a statement (a Bind or a Query), as opposed to only preparing or
    /// describing: an open batch that executed must be finished on its store.
    pub executed: bool,
    /// Sent outside the client's deferred transaction (`Target::Unpinned`): the rest of an
    /// open batch must not begin it either.
    pub unpinned: bool,
}

impl BackendEntry {
    pub fn new(store: usize) -> BackendEntry {
        BackendEntry {
            store,
            swallow: VecDeque::new(),
            readies_expected: 0,
            readies_seen: 0,
            open: false,
            saw_error: false,
            effects: Vec::new(),
            status_override: None,
            extra_readies: 0,
            executed: false,
            unpinned: false,
        }
    }

    fn is_complete(&self) -> bool {
        !self.open
            && self.readies_seen >= self.readies_expected
            && self.swallow.is_empty()
            && self.extra_readies == 0
    }
}

/// One owed answer.
#[derive(Debug)]
pub enum Pending {
    /// Bytes evshift composed itself, delivered when they reach the head.
    Synthetic(BytesMut),
    Backend(BackendEntry),
}

/// What happened to a store message handed to the queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Forwarded to the client, or swallowed.
    Handled,
    /// A unit completed: its store, the transaction status of its last ReadyForQuery, and the
    /// effects to apply (empty if the unit saw an error).
    Completed {
        store: usize,
        status: u8,
        effects: Vec<Effect>,
    },
}

/// What the fast path did with buffered store messages.
#[derive(Debug, PartialEq, Eq)]
pub enum Run {
    /// The head entry needs message-by-message handling (something to swallow or rewrite).
    NotApplicable,
    /// No complete message was buffered.
    Empty,
    /// Messages were moved to the client.
    Moved(Delivered),
}

/// The message from a store does not fit what evshift expected from it: the session with that
/// store cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected message {tag:?} from store #{store}: {why}")]
pub struct Desync {
    pub store: usize,
    pub tag: char,
    pub why: &'static str,
}

/// The ordered queue of owed answers of one client session.
#[derive(Debug, Default)]
pub struct PendingQueue {
    entries: VecDeque<Pending>,
}

impl PendingQueue {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The store whose answers are awaited now, if the head is a store's.
    pub fn head_store(&self) -> Option<usize> {
        match self.entries.front() {
            Some(Pending::Backend(entry)) => Some(entry.store),
            _ => None,
        }
    }

    /// True when answers from `store` are still owed.
    pub fn awaits(&self, store: usize) -> bool {
        self.entries
            .iter()
            .any(|p| matches!(p, Pending::Backend(e) if e.store == store))
    }

    /// The last entry, if it is a store's and still open (a batch sent at Flush).
    pub fn open_tail(&mut self) -> Option<&mut BackendEntry> {
        match self.entries.back_mut() {
            Some(Pending::Backend(entry)) if entry.open => Some(entry),
            _ => None,
        }
    }

    pub fn push(&mut self, pending: Pending) {
        self.entries.push_back(pending);
    }

    /// Moves synthetic answers at the head into `out`.
    pub fn drain_synthetic(&mut self, out: &mut BytesMut) {
        while let Some(Pending::Synthetic(_)) = self.entries.front() {
            if let Some(Pending::Synthetic(bytes)) = self.entries.pop_front() {
                out.extend_from_slice(&bytes);
            }
        }
    }

    /// Fast path for the common case: when the head entry has nothing to swallow or rewrite,
    /// moves every complete message in `input` up to and including the next ReadyForQuery to
    /// `out` in one piece, without copying when `out` is empty.
    pub fn deliver_run(
        &mut self,
        input: &mut BytesMut,
        limit: usize,
        out: &mut BytesMut,
    ) -> Result<Run, FrameError> {
        let Some(Pending::Backend(entry)) = self.entries.front_mut() else {
            return Ok(Run::NotApplicable);
        };
        if !entry.swallow.is_empty() || entry.status_override.is_some() || entry.extra_readies > 0 {
            return Ok(Run::NotApplicable);
        }
        let mut offset = 0;
        let mut ready = None;
        while let Some(len) = Frame::check(&input[offset..], limit)? {
            match input[offset] {
                b'E' => entry.saw_error = true,
                b'Z' => {
                    ready = Some(input.get(offset + 5).copied().unwrap_or(b'I'));
                    offset += len;
                    break;
                }
                _ => {}
            }
            offset += len;
        }
        if offset == 0 {
            return Ok(Run::Empty);
        }
        let run = input.split_to(offset);
        if out.is_empty() {
            *out = run;
        } else {
            out.extend_from_slice(&run);
        }
        let Some(status) = ready else {
            return Ok(Run::Moved(Delivered::Handled));
        };
        entry.readies_seen += 1;
        Ok(Run::Moved(self.complete_if_done(Some(status))))
    }

    /// Handles one message from the store at the head: swallows it or appends it to `out`.
    pub fn deliver(&mut self, frame: Frame, out: &mut BytesMut) -> Result<Delivered, Desync> {
        let Some(Pending::Backend(entry)) = self.entries.front_mut() else {
            return Err(Desync {
                store: usize::MAX,
                tag: frame.tag as char,
                why: "no answer was expected",
            });
        };
        let tag = frame.tag;
        let store = entry.store;
        let desync = |why| Desync {
            store,
            tag: tag as char,
            why,
        };
        // Asynchronous messages may come at any time and always belong to the client.
        if matches!(tag, b'N' | b'S' | b'A') {
            out.extend_from_slice(&frame.bytes);
            return Ok(Delivered::Handled);
        }
        if let Some(&swallow) = entry.swallow.front() {
            match (swallow, tag) {
                (Swallow::ParseComplete, b'1')
                | (Swallow::BindComplete, b'2')
                | (Swallow::CloseComplete, b'3')
                | (Swallow::CommandComplete, b'C') => {
                    entry.swallow.pop_front();
                    return Ok(Delivered::Handled);
                }
                (Swallow::UntilReady, b'Z') => {
                    entry.swallow.pop_front();
                    return Ok(self.complete_if_done(None));
                }
                (Swallow::UntilReady, b'E') => {
                    // The client must learn why its statement will not run as asked.
                    entry.saw_error = true;
                    out.extend_from_slice(&frame.bytes);
                    return Ok(Delivered::Handled);
                }
                (Swallow::UntilReady, _) => return Ok(Delivered::Handled),
                (_, b'E') => {
                    // The store now skips to the next Sync: no more injected answers come.
                    entry.swallow.retain(|s| *s == Swallow::UntilReady);
                    entry.saw_error = true;
                    out.extend_from_slice(&frame.bytes);
                    return Ok(Delivered::Handled);
                }
                _ => return Err(desync("expected the answer to an injected message")),
            }
        }
        if tag == b'Z' && entry.extra_readies > 0 && entry.readies_seen >= entry.readies_expected {
            entry.extra_readies -= 1;
            let status = frame.bytes.get(5).copied().unwrap_or(b'I');
            return Ok(self.complete_if_done(Some(status)));
        }
        match (tag, entry.status_override) {
            (b'Z', Some(status)) if frame.bytes.len() == 6 => {
                out.extend_from_slice(&frame.bytes[..5]);
                out.extend_from_slice(&[status]);
            }
            _ => out.extend_from_slice(&frame.bytes),
        }
        match tag {
            b'E' => entry.saw_error = true,
            b'Z' => {
                entry.readies_seen += 1;
                if entry.readies_seen > entry.readies_expected && !entry.open {
                    return Err(desync("more ReadyForQuery than Sync"));
                }
                let status = frame.bytes.get(5).copied().unwrap_or(b'I');
                return Ok(self.complete_if_done(Some(status)));
            }
            _ => {}
        }
        Ok(Delivered::Handled)
    }

    fn complete_if_done(&mut self, status: Option<u8>) -> Delivered {
        let done = matches!(self.entries.front(), Some(Pending::Backend(e)) if e.is_complete());
        if !done {
            return Delivered::Handled;
        }
        match self.entries.pop_front() {
            Some(Pending::Backend(entry)) => Delivered::Completed {
                store: entry.store,
                status: status.unwrap_or(b'I'),
                effects: if entry.saw_error {
                    Vec::new()
                } else {
                    entry.effects
                },
            },
            _ => Delivered::Handled,
        }
    }

    /// Removes every entry of `store` (whose session was lost), returning how many of them owed
    /// the client a ReadyForQuery, so that the caller can answer them with an error.
    pub fn fail_store(&mut self, store: usize) -> Vec<u32> {
        let mut owed = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for pending in self.entries.drain(..) {
            match pending {
                Pending::Backend(entry) if entry.store == store => {
                    owed.push(entry.readies_expected.saturating_sub(entry.readies_seen));
                }
                other => kept.push_back(other),
            }
        }
        self.entries = kept;
        owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        Frame {
            tag,
            bytes: bytes::Bytes::from(v),
        }
    }

    fn backend(store: usize, readies: u32, swallow: &[Swallow]) -> Pending {
        let mut e = BackendEntry::new(store);
        e.readies_expected = readies;
        e.swallow = swallow.iter().copied().collect();
        Pending::Backend(e)
    }

    #[test]
    fn answers_are_delivered_in_request_order() {
        let mut q = PendingQueue::default();
        let mut out = BytesMut::new();
        q.push(backend(0, 1, &[]));
        let mut synthetic = BytesMut::new();
        synthetic.extend_from_slice(b"SYN");
        q.push(Pending::Synthetic(synthetic));
        q.push(backend(1, 1, &[]));
        q.drain_synthetic(&mut out);
        assert!(out.is_empty(), "synthetic answer must wait for store 0");
        assert_eq!(q.head_store(), Some(0));
        q.deliver(frame(b'C', b"SELECT 1\0"), &mut out).unwrap();
        let done = q.deliver(frame(b'Z', b"I"), &mut out).unwrap();
        assert_eq!(
            done,
            Delivered::Completed {
                store: 0,
                status: b'I',
                effects: vec![]
            }
        );
        q.drain_synthetic(&mut out);
        assert!(out.ends_with(b"SYN"));
        assert_eq!(q.head_store(), Some(1));
    }

    #[test]
    fn injected_answers_are_swallowed_but_errors_pass() {
        let mut q = PendingQueue::default();
        let mut out = BytesMut::new();
        q.push(backend(
            0,
            1,
            &[Swallow::UntilReady, Swallow::ParseComplete],
        ));
        q.deliver(frame(b'C', b"BEGIN\0"), &mut out).unwrap();
        q.deliver(frame(b'Z', b"T"), &mut out).unwrap();
        q.deliver(frame(b'1', b""), &mut out).unwrap();
        assert!(out.is_empty());
        q.deliver(frame(b'2', b""), &mut out).unwrap();
        q.deliver(frame(b'Z', b"T"), &mut out).unwrap();
        assert_eq!(out[0], b'2');
        assert!(q.is_empty());

        // A failing injected Parse: the error reaches the client, the rest is skipped.
        q.push(backend(
            0,
            1,
            &[Swallow::ParseComplete, Swallow::ParseComplete],
        ));
        let mut out = BytesMut::new();
        q.deliver(frame(b'E', b"SERROR\0C42601\0\0"), &mut out)
            .unwrap();
        let done = q.deliver(frame(b'Z', b"I"), &mut out).unwrap();
        assert!(matches!(done, Delivered::Completed { .. }));
        assert_eq!(out[0], b'E');
    }

    #[test]
    fn effects_apply_only_without_error() {
        let mut q = PendingQueue::default();
        let mut out = BytesMut::new();
        let mut e = BackendEntry::new(0);
        e.readies_expected = 1;
        e.effects.push(Effect::RecordSet("SET a = 1".into()));
        q.push(Pending::Backend(e));
        q.deliver(frame(b'E', b"SERROR\0\0"), &mut out).unwrap();
        match q.deliver(frame(b'Z', b"I"), &mut out).unwrap() {
            Delivered::Completed { effects, .. } => assert!(effects.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unexpected_messages_are_desync_not_panics() {
        let mut q = PendingQueue::default();
        let mut out = BytesMut::new();
        assert!(q.deliver(frame(b'D', b""), &mut out).is_err());
        q.push(backend(0, 1, &[Swallow::ParseComplete]));
        assert!(q.deliver(frame(b'D', b""), &mut out).is_err());
    }
}
