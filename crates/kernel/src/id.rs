//! Identifiers: UUIDv7 (time-ordered, so inserts stay local in B-tree indexes), stored as 16
//! bytes and shown in the usual hyphenated form.

use serde::{Deserialize, Serialize};

/// A UUIDv7 identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(pub uuid::Uuid);

impl Id {
    /// A fresh time-ordered id.
    pub fn new() -> Id {
        Id(uuid::Uuid::now_v7())
    }

    /// The 16 raw bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// From the 16 stored bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Id> {
        uuid::Uuid::from_slice(bytes).ok().map(Id)
    }
}

impl Default for Id {
    fn default() -> Self {
        Id::new()
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl std::str::FromStr for Id {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_round_trip() {
        let a = Id::new();
        let b = Id::new();
        assert!(a < b, "UUIDv7 from one process must sort by creation");
        let parsed: Id = a.to_string().parse().expect("own display parses");
        assert_eq!(parsed, a);
        assert_eq!(Id::from_slice(a.as_bytes()), Some(a));
        assert_eq!(a.0.get_version_num(), 7);
    }
}
