//! V8's structured-clone wire format (what `v8::ValueSerializer` writes and
//! `v8::ValueDeserializer` reads), spoken from Rust.
//!
//! Every copy of data between Rust and an isolate goes through it: Rust data is written in
//! this format straight from serde ([`to_wire`]) and V8 builds the objects natively; values
//! leave an isolate through V8's serializer and are read straight into serde types
//! ([`from_wire`]) or a [`Value`](crate::Value) ([`read_value`]). V8's native (de)serializer is several
//! times faster than building or walking objects through the embedder API, and it is also
//! what an `ivm::ExternalCopy` holds.
//!
//! Format versions up to 16 are read (V8 15.2 writes 16: buffer sizes as 64-bit varints,
//! immutable ArrayBuffers); version 15 is written. The input may come from any isolate of
//! the process, whose JavaScript chose its shape, so every read is bounds-checked, nesting is
//! bounded, and what a read makes is bounded by a [`Budget`]: a graph that shares objects is
//! copied each time it is referenced (a DAG of 40 doublings is 80 bytes of wire and 2^40
//! values of tree; 500 references to a 1 MB string are 500 MB), so the budget counts what is
//! made, not what is read.

mod de;
mod read;
mod ser;

pub use de::from_wire;
pub use read::read_value;
pub use ser::{to_json, to_wire};

use crate::error::Error;

/// The format version [`to_wire`] writes.
const WRITTEN_VERSION: u8 = 15;
/// The newest format version the readers know.
const LATEST_VERSION: u32 = 16;
/// Nesting deeper than this is refused rather than risking the thread's stack.
const MAX_DEPTH: usize = 1000;

/// Whether wire bytes hold a primitive (the tag after the two header bytes): undefined,
/// null, a boolean, a number, a BigInt or a string.
pub fn is_primitive(bytes: &[u8]) -> bool {
    matches!(bytes.get(2), Some(b'_' | b'0' | b'T' | b'F' | b'I' | b'U' | b'N' | b'Z' | b'"' | b'c' | b'S'))
}

/// Byte stores that travel beside the bytes: transferred ArrayBuffers and SharedArrayBuffers,
/// by the ids the serializer gave them.
pub trait Stores {
    fn transferred(&self, id: u32) -> Option<Vec<u8>>;
    fn shared(&self, id: u32) -> Option<Vec<u8>>;
}

/// For bytes that carry no stores.
pub struct NoStores;

impl Stores for NoStores {
    fn transferred(&self, _: u32) -> Option<Vec<u8>> {
        None
    }
    fn shared(&self, _: u32) -> Option<Vec<u8>> {
        None
    }
}

/// A value in V8's structured-clone format, with the contents of the SharedArrayBuffers it
/// refers to (which cannot be shared across processes, so they are copied).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Wire {
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    pub shared: Vec<serde_bytes::ByteBuf>,
}

/// A value that came over the pipe reads its SharedArrayBuffers from the copies sent with it.
impl Stores for Wire {
    fn transferred(&self, _: u32) -> Option<Vec<u8>> {
        None
    }
    fn shared(&self, id: u32) -> Option<Vec<u8>> {
        self.shared.get(id as usize).map(|bytes| bytes.to_vec())
    }
}

/// What one value costs a [`Budget`], besides the bytes of its string or buffer.
const VALUE_COST: usize = 16;

/// How much Rust data a read may make, in bytes: `VALUE_COST` (16 bytes) a value, plus the bytes of
/// each string and buffer, each time it is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget(usize);

impl Budget {
    /// For bytes the host wrote itself: no limit.
    pub const HOST: Budget = Budget(usize::MAX);

    /// For what a script made in an isolate with this memory limit (in bytes): twice the
    /// limit, room for anything the isolate can hold.
    pub fn of_isolate(memory_limit: usize) -> Budget {
        Budget(memory_limit.saturating_mul(2))
    }

    pub fn bytes(self) -> usize {
        self.0
    }

    /// The error for a copy that would make more.
    pub fn exceeded(self) -> Error {
        Error::Conversion(format!(
            "the value is too large to copy out of its isolate: it would take more than {} MB here (twice the isolate's memory limit)",
            self.0 >> 20
        ))
    }
}

fn malformed() -> Error {
    Error::Conversion("malformed structured-clone data".into())
}

fn cycle() -> Error {
    Error::Conversion("a value with a cycle cannot be copied into a Rust value".into())
}

/// Where an object starts in the bytes, so a later reference can read it again.
#[derive(Clone, Copy)]
struct ObjectStart {
    at: usize,
    /// The id the object's first receiver took (a view's buffer comes before it).
    first_id: u32,
}

/// The read position and the object-id bookkeeping shared by both readers.
struct Cursor<'b> {
    bytes: &'b [u8],
    at: usize,
    stores: &'b dyn Stores,
    /// Every object read so far, by id.
    objects: Vec<ObjectStart>,
    next_id: u32,
    /// Ids of the objects being read (a reference to one of them is a cycle).
    open: Vec<u32>,
    /// Nonzero while a reference is being read again: ids are already recorded.
    replaying: usize,
    /// Bytes left to make (see [`Budget`]).
    budget: usize,
    /// The whole budget, for the error.
    limit: Budget,
}

impl<'b> Cursor<'b> {
    fn new(bytes: &'b [u8], stores: &'b dyn Stores, budget: Budget) -> Result<Cursor<'b>, Error> {
        let mut cursor = Cursor { bytes, at: 0, stores, objects: Vec::new(), next_id: 0, open: Vec::new(), replaying: 0, budget: budget.0, limit: budget };
        if cursor.bytes.first() == Some(&0xFF) {
            cursor.at = 1;
            let version = cursor.varint()?;
            if version > LATEST_VERSION {
                return Err(Error::Conversion(format!("structured-clone data of format version {version} is newer than this reader")));
            }
        }
        Ok(cursor)
    }

    /// Counts one value made.
    fn tick(&mut self) -> Result<(), Error> {
        self.charge(VALUE_COST)
    }

    /// Counts `bytes` made.
    fn charge(&mut self, bytes: usize) -> Result<(), Error> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(|| self.limit.exceeded())?;
        Ok(())
    }

    /// A sparse array of `length` becomes that many values: charge them up front (it could
    /// claim a length of 2^32 with no elements).
    fn charge_sparse(&mut self, length: u32) -> Result<(), Error> {
        self.charge((length as usize).saturating_mul(VALUE_COST))
    }

    /// The next tag, not consumed (padding skipped).
    fn peek(&self) -> Option<u8> {
        self.bytes[self.at..].iter().copied().find(|b| *b != 0)
    }

    /// Whether the value at the cursor may hold others (reading it recurses).
    #[inline(always)]
    fn nests(&self) -> bool {
        // The byte at the cursor: padding before a tag is rare, and counts as nesting.
        !matches!(self.bytes.get(self.at), Some(b'_' | b'0' | b'T' | b'F' | b'I' | b'U' | b'N' | b'Z' | b'"' | b'S' | b'c' | b'D') | None)
    }

    /// The next tag (padding skipped).
    fn tag(&mut self) -> Result<u8, Error> {
        loop {
            let byte = *self.bytes.get(self.at).ok_or_else(malformed)?;
            self.at += 1;
            if byte != 0 {
                return Ok(byte);
            }
        }
    }

    /// Consumes `tag` if it is next.
    fn eat(&mut self, tag: u8) -> bool {
        if self.peek() == Some(tag) {
            while self.bytes[self.at] == 0 {
                self.at += 1;
            }
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn raw(&mut self, len: usize) -> Result<&'b [u8], Error> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len()).ok_or_else(malformed)?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn varint64(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.raw(1)?[0];
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed())
    }

    fn varint(&mut self) -> Result<u32, Error> {
        u32::try_from(self.varint64()?).map_err(|_| malformed())
    }

    /// A byte length or offset (a 64-bit varint since format 16).
    fn size(&mut self) -> Result<usize, Error> {
        usize::try_from(self.varint64()?).map_err(|_| malformed())
    }

    fn zigzag(&mut self) -> Result<i32, Error> {
        let zigzag = self.varint()?;
        Ok(((zigzag >> 1) as i32) ^ -((zigzag & 1) as i32))
    }

    fn double(&mut self) -> Result<f64, Error> {
        Ok(f64::from_ne_bytes(self.raw(8)?.try_into().map_err(|_| malformed())?))
    }

    /// A string's contents after its tag: borrowed when it is ASCII or UTF-8 already.
    fn string_body(&mut self, tag: u8) -> Result<std::borrow::Cow<'b, str>, Error> {
        let len = self.size()?;
        let raw = self.raw(len)?;
        self.charge(len)?;
        Ok(match tag {
            // SAFETY: ASCII is valid UTF-8.
            b'"' if raw.is_ascii() => std::borrow::Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(raw) }),
            b'"' => std::borrow::Cow::Owned(raw.iter().map(|b| char::from(*b)).collect()),
            b'S' => String::from_utf8_lossy(raw),
            b'c' => {
                let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect();
                std::borrow::Cow::Owned(String::from_utf16_lossy(&units))
            }
            _ => return Err(malformed()),
        })
    }

    /// A tagged string.
    fn string(&mut self) -> Result<String, Error> {
        let tag = self.tag()?;
        Ok(self.string_body(tag)?.into_owned())
    }

    fn bigint(&mut self) -> Result<super::BigInt, Error> {
        let bitfield = self.varint()?;
        let digits = self.raw((bitfield >> 1) as usize)?;
        let words = digits
            .chunks(8)
            .map(|c| {
                let mut word = [0u8; 8];
                word[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(word)
            })
            .collect();
        Ok(super::BigInt::from_words(bitfield & 1 == 1, words))
    }

    /// Gives the receiver starting at `start` (with `first_id` the id counter there) its id.
    fn open_object(&mut self, start: usize, first_id: u32) -> Result<(), Error> {
        if self.open.len() >= MAX_DEPTH {
            return Err(Error::Conversion(format!("the value is nested deeper than {MAX_DEPTH} levels")));
        }
        let id = self.next_id;
        self.next_id += 1;
        if self.replaying == 0 {
            self.objects.push(ObjectStart { at: start, first_id });
        }
        self.open.push(id);
        Ok(())
    }

    fn close_object(&mut self) {
        self.open.pop();
    }

    /// A leaf receiver (Date, buffer, view...): an id, nothing nested.
    fn leaf(&mut self, start: usize, first_id: u32) -> Result<(), Error> {
        self.open_object(start, first_id)?;
        self.close_object();
        Ok(())
    }

    /// Reads object `id` again where it was first read, with `read`, then comes back.
    fn replay<R>(&mut self, id: u32, read: impl FnOnce(&mut Self) -> Result<R, Error>) -> Result<R, Error> {
        if self.open.contains(&id) {
            return Err(cycle());
        }
        let start = *self.objects.get(id as usize).ok_or_else(malformed)?;
        let (at, next_id) = (self.at, self.next_id);
        self.at = start.at;
        self.next_id = start.first_id;
        self.replaying += 1;
        let result = read(self);
        self.replaying -= 1;
        self.at = at;
        self.next_id = next_id;
        result
    }

    /// `subtag, byteOffset, byteLength, flags` after a buffer: the viewed part of `bytes`.
    fn view(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.varint()?;
        let offset = self.size()?;
        let len = self.size()?;
        self.varint()?;
        let end = offset.checked_add(len).filter(|end| *end <= bytes.len()).ok_or_else(malformed)?;
        Ok(if offset == 0 && end == bytes.len() { bytes } else { bytes[offset..end].to_vec() })
    }

    /// The bytes of an ArrayBuffer-like tag (`B`, `C`, `~`, `t`, `u`), with its id.
    fn buffer(&mut self, tag: u8, start: usize, first_id: u32) -> Result<Vec<u8>, Error> {
        let bytes = match tag {
            b'B' | b'C' => {
                let len = self.size()?;
                self.charge(len)?;
                self.raw(len)?.to_vec()
            }
            b'~' => {
                let len = self.size()?;
                self.size()?;
                self.charge(len)?;
                self.raw(len)?.to_vec()
            }
            b't' => {
                let id = self.varint()?;
                let bytes = self.stores.transferred(id).ok_or_else(malformed)?;
                self.charge(bytes.len())?;
                bytes
            }
            b'u' => {
                let id = self.varint()?;
                let bytes = self.stores.shared(id).ok_or_else(malformed)?;
                self.charge(bytes.len())?;
                bytes
            }
            _ => return Err(malformed()),
        };
        self.leaf(start, first_id)?;
        Ok(bytes)
    }

    /// A view that follows a buffer just read: its bytes, with its id (it is addressed from
    /// where its buffer started).
    fn maybe_view(&mut self, bytes: Vec<u8>, start: usize, first_id: u32) -> Result<Vec<u8>, Error> {
        if !self.eat(b'V') {
            return Ok(bytes);
        }
        let viewed = self.view(bytes)?;
        self.leaf(start, first_id)?;
        Ok(viewed)
    }
}

/// V8's regexp flag bits as `RegExp.prototype.flags` spells them.
const REGEXP_FLAGS: [(u32, char); 8] = [(7, 'd'), (0, 'g'), (1, 'i'), (2, 'm'), (5, 's'), (4, 'u'), (8, 'v'), (3, 'y')];

fn regexp_flags_text(bits: u32) -> String {
    REGEXP_FLAGS.iter().filter(|(bit, _)| bits & (1 << bit) != 0).map(|(_, letter)| *letter).collect()
}

fn regexp_flags_bits(text: &str) -> Result<u32, Error> {
    text.chars().try_fold(0, |bits, c| match REGEXP_FLAGS.iter().find(|(_, letter)| *letter == c) {
        Some((bit, _)) => Ok(bits | 1 << bit),
        None => Err(Error::Conversion(format!("invalid regular expression flag `{c}`"))),
    })
}
