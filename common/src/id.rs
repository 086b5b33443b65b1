//! Object ids: a directory object's GUID held as 128 bits, ordered as its big-endian bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The id of a directory object: a GUID as 128 bits.
///
/// Ids order by their numeric value, which is the order of the GUID's canonical text form
/// (`8-4-4-4-12` hex digits, big-endian). Shards are contiguous ranges of this order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectId(pub u128);

impl ObjectId {
    /// The id Graph gives a singleton that has a name instead of a GUID
    /// (`authorizationPolicy`, `authenticationMethodsPolicy`): a fixed id derived from the name.
    pub fn for_singleton(name: &str) -> Self {
        let hash = blake3::hash(format!("rewind-singleton:{name}").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash.as_bytes()[..16]);
        Self(u128::from_be_bytes(bytes))
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_u128(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an object id (a GUID was expected): {0:?}")]
pub struct ParseObjectIdError(pub String);

impl FromStr for ObjectId {
    type Err = ParseObjectIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s)
            .map(|u| Self(u.as_u128()))
            .map_err(|_| ParseObjectIdError(s.to_owned()))
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // Written into a stack buffer, not through the formatting machinery: a page of
            // members is mostly ids.
            let mut buf = uuid::Uuid::encode_buffer();
            serializer.serialize_str(
                uuid::Uuid::from_u128(self.0)
                    .hyphenated()
                    .encode_lower(&mut buf),
            )
        } else {
            serializer.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ObjectId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a GUID string or 16 bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ObjectId, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ObjectId, E> {
                let bytes: [u8; 16] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &"16 bytes"))?;
                Ok(ObjectId::from_bytes(bytes))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visitor)
        } else {
            deserializer.deserialize_bytes(Visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_order() {
        let a: ObjectId = "00000000-0000-0000-0000-0000000000ff".parse().unwrap();
        let b: ObjectId = "10000000-0000-0000-0000-000000000000".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "00000000-0000-0000-0000-0000000000ff");
        assert!("not-a-guid".parse::<ObjectId>().is_err());
    }

    #[test]
    fn binary_and_json_round_trip() {
        let id = ObjectId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let bin = rmp_serde::to_vec(&id).unwrap();
        assert_eq!(bin.len(), 18, "bin8 header + 16 bytes");
        assert_eq!(rmp_serde::from_slice::<ObjectId>(&bin).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"01234567-89ab-cdef-0011-223344556677\"");
        assert_eq!(serde_json::from_str::<ObjectId>(&json).unwrap(), id);
    }
}
