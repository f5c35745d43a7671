//! An arbitrary-precision integer as JavaScript's BigInt holds it (sign + 64-bit words).
//!
//! Converting between binary and decimal takes time quadratic in the length here (a BigInt of
//! 2^18 bits takes about 0.1 s), and a script can make BigInts of millions of bits; so text
//! is decimal up to [`MAX_DECIMAL_BITS`] and hexadecimal (`0x…`, which JavaScript's `BigInt()`
//! reads too) beyond, in linear time both ways.

use std::fmt;

/// BigInts up to this many bits are written in decimal; longer ones in hexadecimal.
pub const MAX_DECIMAL_BITS: usize = 1 << 18;
/// Decimal text is read up to this many digits (about [`MAX_DECIMAL_BITS`] bits).
const MAX_DECIMAL_DIGITS: usize = 78_914;

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

impl BigInt {
    /// The number of significant bits of the magnitude.
    pub fn bits(&self) -> usize {
        self.words.last().map_or(0, |top| self.words.len() * 64 - top.leading_zeros() as usize)
    }

    /// Hexadecimal, `0x` after the sign.
    fn write_hex(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.negative { "-0x" } else { "0x" })?;
        let mut words = self.words.iter().rev();
        if let Some(top) = words.next() {
            write!(f, "{top:x}")?;
        }
        for word in words {
            write!(f, "{word:016x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for BigInt {
    /// Decimal, as JavaScript's `String(bigint)` writes it, up to 2^18 bits;
    /// hexadecimal (`0x…`) beyond.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = self.to_i128() {
            return write!(f, "{v}");
        }
        if self.bits() > MAX_DECIMAL_BITS {
            return self.write_hex(f);
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

/// Text that is not an integer (or a decimal one too long to read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseBigIntError;

impl fmt::Display for ParseBigIntError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an integer of at most {MAX_DECIMAL_DIGITS} decimal digits or in hexadecimal (0x...)")
    }
}

impl std::error::Error for ParseBigIntError {}

impl std::str::FromStr for BigInt {
    type Err = ParseBigIntError;

    /// Parses an integer with an optional leading `-`: decimal (up to 78,914 digits) as
    /// `BigInt("...")` does, or hexadecimal after `0x`, as [`Display`](fmt::Display) writes
    /// long ones.
    fn from_str(s: &str) -> Result<Self, ParseBigIntError> {
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
            return from_hex(negative, hex);
        }
        if digits.is_empty() || digits.len() > MAX_DECIMAL_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
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

/// The magnitude in `hex` (digits only), with a sign.
fn from_hex(negative: bool, hex: &str) -> Result<BigInt, ParseBigIntError> {
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseBigIntError);
    }
    // 16 digits to a word, least significant first.
    let words = hex
        .as_bytes()
        .rchunks(16)
        .map(|chunk| std::str::from_utf8(chunk).ok().and_then(|c| u64::from_str_radix(c, 16).ok()).ok_or(ParseBigIntError))
        .collect::<Result<Vec<u64>, _>>()?;
    Ok(BigInt::from_words(negative, words))
}
