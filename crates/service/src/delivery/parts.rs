//! The pieces a sale's package is served from (not a wire type: the HTTP layer streams them).

use std::path::PathBuf;

/// The byte pieces of a sale's package, in order.
#[derive(Debug, Clone)]
pub struct PackageParts {
    /// Total length.
    pub len: u64,
    /// The package digest, hex (an `ETag`).
    pub digest: String,
    /// The pieces.
    pub segments: Vec<Segment>,
}

/// A piece of a package.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Bytes from the sale's row.
    Bytes(Vec<u8>),
    /// A sealed file of the product.
    File {
        /// Where.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
}

impl Segment {
    /// Its length.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File { len, .. } => *len,
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
