//! An arbitrary-precision integer as JavaScript's BigInt holds it (sign + 64-bit words).

use std::fmt;

/// A JavaScript BigInt: a sign and little-endian 64-bit magnitude words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct BigInt {
    negative: bool,
    /// Magnitude, least significant word first, without trailing zero words.
    words: Vec<u64>,
}

impl BigInt {
    /// Builds a BigInt from its sign and little-endian magnitude words.
    pub fn from_words(negative: bool, words: Vec<u64>) -> Self {
        let mut b = BigInt { negative, words };
        while b.words.last() == Some(&0) {
            b.words.pop();
        }
        if b.words.is_empty() {
            b.negative = false;
        }
        b
    }

    /// The sign (`true` for negative) and the little-endian magnitude words.
    pub fn words(&self) -> (bool, &[u64]) {
        (self.negative, &self.words)
    }

    /// The value as an `i128`, if it fits.
    pub fn to_i128(&self) -> Option<i128> {
        let magnitude: u128 = match self.words.as_slice() {
            [] => 0,
            [lo] => *lo as u128,
            [lo, hi] => ((*hi as u128) << 64) | *lo as u128,
            _ => return None,
        };
        if self.negative {
            if magnitude <= i128::MAX as u128 + 1 { Some((magnitude as i128).wrapping_neg()) } else { None }
        } else {
            i128::try_from(magnitude).ok()
        }
    }

    /// The value as a `u128`, if it fits.
    pub fn to_u128(&self) -> Option<u128> {
        match (self.negative, self.words.as_slice()) {
            (true, _) => None,
            (false, []) => Some(0),
            (false, [lo]) => Some(*lo as u128),
            (false, [lo, hi]) => Some(((*hi as u128) << 64) | *lo as u128),
            _ => None,
        }
    }
}

impl From<i128> for BigInt {
    fn from(v: i128) -> Self {
        let m = v.unsigned_abs();
        BigInt::from_words(v < 0, vec![m as u64, (m >> 64) as u64])
    }
}

impl From<u128> for BigInt {
    fn from(v: u128) -> Self {
        BigInt::from_words(false, vec![v as u64, (v >> 64) as u64])
    }
}

impl From<i64> for BigInt {
    fn from(v: i64) -> Self {
        BigInt::from(v as i128)
    }
}

impl From<u64> for BigInt {
    fn from(v: u64) -> Self {
        BigInt::from(v as u128)
    }
}

impl fmt::Display for BigInt {
    /// Decimal, as JavaScript's `String(bigint)` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = self.to_i128() {
            return write!(f, "{v}");
        }
        // Repeated division by 10^19 over the words, most significant first.
        const CHUNK: u64 = 10_000_000_000_000_000_000;
        let mut words = self.words.clone();
        let mut chunks = Vec::new();
        while !words.is_empty() {
            let mut rem: u128 = 0;
            for w in words.iter_mut().rev() {
                let cur = (rem << 64) | *w as u128;
                *w = (cur / CHUNK as u128) as u64;
                rem = cur % CHUNK as u128;
            }
            chunks.push(rem as u64);
            while words.last() == Some(&0) {
                words.pop();
            }
        }
        if self.negative {
            f.write_str("-")?;
        }
        let mut iter = chunks.iter().rev();
        if let Some(first) = iter.next() {
            write!(f, "{first}")?;
        }
        for chunk in iter {
            write!(f, "{chunk:019}")?;
        }
        Ok(())
    }
}

/// A decimal string that is not an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseBigIntError;

impl fmt::Display for ParseBigIntError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a decimal integer")
    }
}

impl std::error::Error for ParseBigIntError {}

impl std::str::FromStr for BigInt {
    type Err = ParseBigIntError;

    /// Parses a decimal integer with an optional leading `-`, as `BigInt("...")` does.
    fn from_str(s: &str) -> Result<Self, ParseBigIntError> {
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseBigIntError);
        }
        let mut words: Vec<u64> = Vec::new();
        // Up to 19 digits at a time: words = words * 10^n + chunk.
        for chunk in digits.as_bytes().chunks(19) {
            let scale = 10u128.pow(chunk.len() as u32);
            let mut carry = chunk.iter().fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
            for w in words.iter_mut() {
                let cur = *w as u128 * scale + carry;
                *w = cur as u64;
                carry = cur >> 64;
            }
            if carry > 0 {
                words.push(carry as u64);
            }
        }
        Ok(BigInt::from_words(negative, words))
    }
}
