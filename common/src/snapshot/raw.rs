//! A raw view of an encoded object: its attributes and link sets as byte slices of the
//! canonical encoding, found by walking the msgpack without decoding or allocating values.
//! Because encodings are canonical, two values are equal exactly when their bytes are, so the
//! diff compares slices and decodes only the values that differ.

/// Attributes `(property id, encoded value)` and link sets `(encoded kind, encoded links)`.
#[derive(Debug, Default)]
pub struct RawObject<'a> {
    pub attributes: Vec<(u8, &'a [u8])>,
    pub link_sets: Vec<(&'a [u8], &'a [u8])>,
}

/// The encoding is not what this build writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawError(pub &'static str);

const MAX_DEPTH: u32 = 64;

fn byte(b: &[u8], at: usize) -> Result<u8, RawError> {
    b.get(at).copied().ok_or(RawError("encoding ends early"))
}

fn be(b: &[u8], at: usize, n: usize) -> Result<usize, RawError> {
    let bytes = b.get(at..at + n).ok_or(RawError("encoding ends early"))?;
    Ok(bytes
        .iter()
        .fold(0usize, |acc, x| (acc << 8) | usize::from(*x)))
}

/// The element count of the array that starts at `at`, and where its first element starts.
fn array_header(b: &[u8], at: usize) -> Result<(usize, usize), RawError> {
    match byte(b, at)? {
        m @ 0x90..=0x9f => Ok((usize::from(m & 0x0f), at + 1)),
        0xdc => Ok((be(b, at + 1, 2)?, at + 3)),
        0xdd => Ok((be(b, at + 1, 4)?, at + 5)),
        _ => Err(RawError("an array was expected")),
    }
}

/// A small unsigned integer at `at`, and where it ends.
fn small_uint(b: &[u8], at: usize) -> Result<(u8, usize), RawError> {
    match byte(b, at)? {
        m @ 0x00..=0x7f => Ok((m, at + 1)),
        0xcc => Ok((byte(b, at + 1)?, at + 2)),
        _ => Err(RawError("a property id was expected")),
    }
}

/// Where the msgpack value that starts at `at` ends.
fn skip(b: &[u8], at: usize, depth: u32) -> Result<usize, RawError> {
    if depth > MAX_DEPTH {
        return Err(RawError("values nest too deeply"));
    }
    let m = byte(b, at)?;
    let (header, items) = match m {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => return Ok(at + 1),
        0x80..=0x8f => (1, 2 * usize::from(m & 0x0f)),
        0x90..=0x9f => (1, usize::from(m & 0x0f)),
        0xa0..=0xbf => return end(b, at + 1 + usize::from(m & 0x1f)),
        0xc4 | 0xd9 => return end(b, at + 2 + be(b, at + 1, 1)?),
        0xc5 | 0xda => return end(b, at + 3 + be(b, at + 1, 2)?),
        0xc6 | 0xdb => return end(b, at + 5 + be(b, at + 1, 4)?),
        0xc7 => return end(b, at + 3 + be(b, at + 1, 1)?),
        0xc8 => return end(b, at + 4 + be(b, at + 1, 2)?),
        0xc9 => return end(b, at + 6 + be(b, at + 1, 4)?),
        0xca | 0xce | 0xd2 => return end(b, at + 5),
        0xcb | 0xcf | 0xd3 => return end(b, at + 9),
        0xcc | 0xd0 => return end(b, at + 2),
        0xcd | 0xd1 => return end(b, at + 3),
        0xd4 => return end(b, at + 3),
        0xd5 => return end(b, at + 4),
        0xd6 => return end(b, at + 6),
        0xd7 => return end(b, at + 10),
        0xd8 => return end(b, at + 18),
        0xdc => (3, be(b, at + 1, 2)?),
        0xdd => (5, be(b, at + 1, 4)?),
        0xde => (3, 2 * be(b, at + 1, 2)?),
        0xdf => (5, 2 * be(b, at + 1, 4)?),
        0xc1 => return Err(RawError("reserved msgpack marker")),
    };
    let mut pos = at + header;
    for _ in 0..items {
        pos = skip(b, pos, depth + 1)?;
    }
    Ok(pos)
}

fn end(b: &[u8], pos: usize) -> Result<usize, RawError> {
    if pos <= b.len() {
        Ok(pos)
    } else {
        Err(RawError("encoding ends early"))
    }
}

/// Walks a canonical `DirectoryObject` encoding (a 7-element array whose last two elements are
/// the attribute list and the link-set list).
pub fn parse(b: &[u8]) -> Result<RawObject<'_>, RawError> {
    let (fields, mut pos) = array_header(b, 0)?;
    if fields != 7 {
        return Err(RawError("an object has 7 fields"));
    }
    for _ in 0..5 {
        pos = skip(b, pos, 1)?;
    }
    let (n, mut pos) = array_header(b, pos)?;
    let mut attributes = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        let (two, p) = array_header(b, pos)?;
        if two != 2 {
            return Err(RawError("an attribute is a pair"));
        }
        let (pid, start) = small_uint(b, p)?;
        pos = skip(b, start, 2)?;
        attributes.push((pid, &b[start..pos]));
    }
    let (n, mut pos) = array_header(b, pos)?;
    let mut link_sets = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        let (two, kind_start) = array_header(b, pos)?;
        if two != 2 {
            return Err(RawError("a link set is a pair"));
        }
        let links_start = skip(b, kind_start, 2)?;
        pos = skip(b, links_start, 2)?;
        link_sets.push((&b[kind_start..links_start], &b[links_start..pos]));
    }
    if pos != b.len() {
        return Err(RawError("bytes after the object"));
    }
    Ok(RawObject {
        attributes,
        link_sets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DirectoryObject, Link, LinkKind, ObjectType};
    use crate::{ObjectId, Value};

    #[test]
    fn finds_every_attribute_and_link_set() {
        let mut g = DirectoryObject::new(ObjectId(1), ObjectType::Group);
        g.set("displayName", "Team".into());
        g.set(
            "description",
            Value::from_json(&serde_json::json!({"a": [1, -2, 3.5, null, true, "x"]})),
        );
        g.set("mailNickname", Value::from("x".repeat(300)));
        g.add_link(LinkKind::Members, Link::to(ObjectId(2)));
        g.add_link(LinkKind::Owners, Link::to(ObjectId(3)));
        let bytes = g.encode();
        let raw = parse(&bytes).unwrap();
        assert_eq!(raw.attributes.len(), g.attributes.len());
        for ((pid, slice), (p, v)) in raw.attributes.iter().zip(&g.attributes) {
            assert_eq!(pid, p);
            assert_eq!(&rmp_serde::from_slice::<Value>(slice).unwrap(), v);
        }
        assert_eq!(raw.link_sets.len(), 2);
        let kind: LinkKind = rmp_serde::from_slice(raw.link_sets[0].0).unwrap();
        assert_eq!(kind, LinkKind::Members);
        let links: Vec<Link> = rmp_serde::from_slice(raw.link_sets[0].1).unwrap();
        assert_eq!(links, g.links_of(LinkKind::Members));
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "a cut at {cut} parsed");
        }
    }
}
