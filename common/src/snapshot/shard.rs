//! The shard blob: a header, a sorted fixed-width index, a block table and zstd-compressed
//! blocks of encoded objects. The index alone answers "did this object change?" (its content
//! hash), so a diff decompresses and decodes only the blocks that hold changed objects.
//!
//! Layout (little-endian):
//! ```text
//! 0   magic "RWSHARD\0"        8
//! 8   format version u16       2
//! 10  shard bits u8, 0 u8      2
//! 12  shard index u32          4
//! 16  object count u32         4
//! 20  block count u32          4
//! 24  data length u64          8
//! 32  dictionary length u32    4
//! 36  0 u32                    4
//! 40  index: object count x 40 (id 16, hash 16, type 1, lifecycle 1, flags 1, 0 1, offset 4)
//!     blocks: block count x 20 (data offset u64, compressed length u32, raw length u32,
//!             first object u32)
//!     dictionary: raw bytes
//!     data: the compressed blocks
//! ```
//! Objects are stored in id order; block `b` holds objects `first_object[b]..first_object[b+1]`
//! and an index entry's offset is where its encoding starts in its block's raw bytes.
//!
//! Blocks are small (a few objects), so reading one changed object costs little; they still
//! compress well because every block is compressed against the shard's dictionary: a sample of
//! the shard's own encodings used as zstd raw-content dictionary.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::SnapshotError;
use crate::id::ObjectId;
use crate::model::{ContentHash, DirectoryObject, ObjectType, SourceOfAuthority};
use crate::snapshot::layout::ShardLayout;
use crate::snapshot::{blake3_hex, check_format_version, FORMAT_VERSION};

pub const SHARD_MAGIC: [u8; 8] = *b"RWSHARD\0";
const HEADER_LEN: usize = 40;
const INDEX_ENTRY_LEN: usize = 40;
const BLOCK_ENTRY_LEN: usize = 20;
/// Raw bytes a block collects before it is compressed. Small blocks keep the cost of reading
/// one changed object low; this is the measured balance with the compression ratio.
pub const DEFAULT_BLOCK_BYTES: usize = 512;
/// The largest raw block a reader accepts (a bound on what a damaged blob can make it allocate).
pub const MAX_BLOCK_RAW_BYTES: u32 = 64 << 20;
/// Bytes of sampled encodings in a shard's compression dictionary (at most).
pub const DICTIONARY_BYTES: usize = 16 * 1024;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Index flag: the object is synced from on-premises.
pub const FLAG_ON_PREMISES: u8 = 1;
/// Index flag: a group whose membership is computed by a rule.
pub const FLAG_DYNAMIC: u8 = 2;

/// One object in a shard's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub id: ObjectId,
    pub hash: ContentHash,
    pub type_code: u8,
    pub lifecycle: u8,
    pub flags: u8,
    /// Where the object's encoding starts in its block's raw bytes.
    pub offset: u32,
}

impl IndexEntry {
    pub fn object_type(&self) -> ObjectType {
        // Checked when the index is read, so the code is always valid here.
        ObjectType::from_code(self.type_code).unwrap_or(ObjectType::User)
    }

    pub fn is_active(&self) -> bool {
        self.lifecycle == 0
    }
}

/// Collects a shard's objects and packs them into a blob.
#[derive(Debug)]
pub struct ShardWriter {
    layout: ShardLayout,
    shard: u32,
    entries: Vec<(IndexEntry, u32, u32)>,
    encodings: Vec<u8>,
    block_bytes: usize,
    level: i32,
}

impl ShardWriter {
    pub fn new(layout: ShardLayout, shard: u32) -> Self {
        Self {
            layout,
            shard,
            entries: Vec::new(),
            encodings: Vec::new(),
            block_bytes: DEFAULT_BLOCK_BYTES,
            level: DEFAULT_ZSTD_LEVEL,
        }
    }

    /// Sets the raw block size and the zstd level (for tuning and tests).
    pub fn with_blocks(mut self, block_bytes: usize, level: i32) -> Self {
        self.block_bytes = block_bytes.max(1);
        self.level = level;
        self
    }

    pub fn shard_index(&self) -> u32 {
        self.shard
    }

    pub fn layout(&self) -> ShardLayout {
        self.layout
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The id and standing (active or not) of every object added so far, in the order added.
    pub fn standing(&self) -> impl Iterator<Item = (ObjectId, bool)> + '_ {
        self.entries.iter().map(|(e, _, _)| (e.id, e.is_active()))
    }

    /// Encoded bytes collected so far (before compression).
    pub fn encoded_len(&self) -> usize {
        self.encodings.len()
    }

    /// Adds an object (put in canonical form here).
    pub fn add(&mut self, mut object: DirectoryObject) {
        object.normalize();
        let start = self.encodings.len();
        object.encode_into(&mut self.encodings);
        let hash = DirectoryObject::hash_encoding(&self.encodings[start..]);
        let mut flags = 0;
        if object.source == SourceOfAuthority::OnPremises {
            flags |= FLAG_ON_PREMISES;
        }
        if object.dynamic_membership {
            flags |= FLAG_DYNAMIC;
        }
        let entry = IndexEntry {
            id: object.id,
            hash,
            type_code: object.object_type.code(),
            lifecycle: object.lifecycle.code(),
            flags,
            offset: 0,
        };
        let len = (self.encodings.len() - start) as u32;
        self.entries.push((entry, start as u32, len));
    }

    /// Sorts, checks and packs the objects into a blob.
    pub fn finish(mut self) -> Result<Vec<u8>, SnapshotError> {
        let shard = self.shard;
        self.entries.sort_unstable_by_key(|(e, _, _)| e.id);
        if let Some(w) = self.entries.windows(2).find(|w| w[0].0.id == w[1].0.id) {
            return Err(SnapshotError::Invalid(format!(
                "shard {shard}: object {} added twice",
                w[0].0.id
            )));
        }
        if let Some((e, _, _)) = self
            .entries
            .iter()
            .find(|(e, _, _)| self.layout.shard_of(e.id) != shard)
        {
            return Err(SnapshotError::Invalid(format!(
                "shard {shard}: object {} belongs to shard {}",
                e.id,
                self.layout.shard_of(e.id)
            )));
        }
        let io = |e: std::io::Error| SnapshotError::Invalid(format!("shard {shard}: zstd: {e}"));
        let dictionary = self.sample_dictionary();
        let prepared = zstd::dict::EncoderDictionary::copy(&dictionary, self.level);
        let mut compressor = if dictionary.is_empty() {
            zstd::bulk::Compressor::new(self.level)
        } else {
            zstd::bulk::Compressor::with_prepared_dictionary(&prepared)
        }
        .map_err(io)?;
        let mut index = Vec::with_capacity(self.entries.len() * INDEX_ENTRY_LEN);
        let mut blocks = Vec::new();
        let mut data = Vec::new();
        let mut raw = Vec::with_capacity(self.block_bytes * 2);
        let mut first_object = 0u32;
        let mut flush =
            |raw: &mut Vec<u8>, first: u32, blocks: &mut Vec<u8>, data: &mut Vec<u8>| {
                let compressed = compressor.compress(raw).map_err(io)?;
                blocks.extend_from_slice(&(data.len() as u64).to_le_bytes());
                blocks.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
                blocks.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                blocks.extend_from_slice(&first.to_le_bytes());
                data.extend_from_slice(&compressed);
                raw.clear();
                Ok::<(), SnapshotError>(())
            };
        for (i, (entry, start, len)) in self.entries.iter().enumerate() {
            let encoding = &self.encodings[*start as usize..(*start + *len) as usize];
            index.extend_from_slice(&entry.id.to_bytes());
            index.extend_from_slice(&entry.hash);
            index.extend_from_slice(&[entry.type_code, entry.lifecycle, entry.flags, 0]);
            index.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            raw.extend_from_slice(encoding);
            if raw.len() > MAX_BLOCK_RAW_BYTES as usize {
                return Err(SnapshotError::Invalid(format!(
                    "shard {shard}: object {} is larger than a block may be ({MAX_BLOCK_RAW_BYTES} bytes)",
                    entry.id
                )));
            }
            if raw.len() >= self.block_bytes {
                flush(&mut raw, first_object, &mut blocks, &mut data)?;
                first_object = i as u32 + 1;
            }
        }
        if !raw.is_empty() {
            flush(&mut raw, first_object, &mut blocks, &mut data)?;
        }
        let block_count = (blocks.len() / BLOCK_ENTRY_LEN) as u32;
        let mut blob = Vec::with_capacity(HEADER_LEN + index.len() + blocks.len() + data.len());
        blob.extend_from_slice(&SHARD_MAGIC);
        blob.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        blob.extend_from_slice(&[self.layout.bits(), 0]);
        blob.extend_from_slice(&shard.to_le_bytes());
        blob.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        blob.extend_from_slice(&block_count.to_le_bytes());
        blob.extend_from_slice(&(data.len() as u64).to_le_bytes());
        blob.extend_from_slice(&(dictionary.len() as u32).to_le_bytes());
        blob.extend_from_slice(&[0; 4]);
        blob.extend_from_slice(&index);
        blob.extend_from_slice(&blocks);
        blob.extend_from_slice(&dictionary);
        blob.extend_from_slice(&data);
        Ok(blob)
    }

    /// Encodings sampled evenly across the shard, up to [`DICTIONARY_BYTES`]; empty when the
    /// shard is small enough that a dictionary would not pay for itself.
    fn sample_dictionary(&self) -> Vec<u8> {
        if self.encodings.len() < DICTIONARY_BYTES * 2 {
            return Vec::new();
        }
        let avg = (self.encodings.len() / self.entries.len().max(1)).max(1);
        let wanted = (DICTIONARY_BYTES / avg).max(1);
        let step = (self.entries.len() / wanted).max(1);
        let mut dictionary = Vec::with_capacity(DICTIONARY_BYTES);
        for (_, start, len) in self.entries.iter().step_by(step) {
            let encoding = &self.encodings[*start as usize..(*start + *len) as usize];
            if dictionary.len() + encoding.len() > DICTIONARY_BYTES {
                break;
            }
            dictionary.extend_from_slice(encoding);
        }
        dictionary
    }
}

#[derive(Clone, Copy, Debug)]
struct Block {
    data_offset: u64,
    compressed_len: u32,
    raw_len: u32,
    first_object: u32,
}

/// A shard blob read into memory, verified and indexed. Objects are decoded on demand.
pub struct LoadedShard {
    shard: u32,
    layout: ShardLayout,
    index: Vec<IndexEntry>,
    blocks: Vec<Block>,
    data_start: usize,
    dictionary: Option<zstd::dict::DecoderDictionary<'static>>,
    blob: Vec<u8>,
}

impl std::fmt::Debug for LoadedShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedShard")
            .field("shard", &self.shard)
            .field("objects", &self.index.len())
            .field("blocks", &self.blocks.len())
            .field("bytes", &self.blob.len())
            .finish()
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl LoadedShard {
    /// Verifies `blob` (against `digest` when given) and indexes it as shard `shard` of
    /// `layout`. Every structural fact is checked, so that later reads cannot go out of bounds.
    pub fn open(
        blob: Vec<u8>,
        layout: ShardLayout,
        shard: u32,
        digest: Option<&str>,
    ) -> Result<Self, SnapshotError> {
        if let Some(expected) = digest {
            let actual = blake3_hex(&blob);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(SnapshotError::DigestMismatch {
                    shard,
                    expected: expected.to_owned(),
                    actual,
                });
            }
        }
        let actual_len = blob.len() as u64;
        if blob.len() < HEADER_LEN {
            return Err(SnapshotError::Truncated {
                shard,
                expected: HEADER_LEN as u64,
                actual: actual_len,
            });
        }
        if blob[..8] != SHARD_MAGIC {
            return Err(SnapshotError::corrupt(
                shard,
                "not a shard blob (bad magic)",
            ));
        }
        check_format_version(|| format!("shard {shard}"), u16_at(&blob, 8))?;
        if blob[10] != layout.bits() || u32_at(&blob, 12) != shard {
            return Err(SnapshotError::corrupt(
                shard,
                format!(
                    "blob says it is shard {} of {} shards, expected shard {shard} of {}",
                    u32_at(&blob, 12),
                    1u64 << blob[10].min(63),
                    layout.count()
                ),
            ));
        }
        let objects = u32_at(&blob, 16) as u64;
        let block_count = u32_at(&blob, 20) as u64;
        let data_len = u64_at(&blob, 24);
        let dictionary_len = u64::from(u32_at(&blob, 32));
        let index_start = HEADER_LEN as u64;
        let blocks_start = index_start + objects * INDEX_ENTRY_LEN as u64;
        let dictionary_start = blocks_start + block_count * BLOCK_ENTRY_LEN as u64;
        let data_start = dictionary_start + dictionary_len;
        let expected_len = data_start.saturating_add(data_len);
        if actual_len < expected_len {
            return Err(SnapshotError::Truncated {
                shard,
                expected: expected_len,
                actual: actual_len,
            });
        }
        if actual_len > expected_len {
            return Err(SnapshotError::corrupt(
                shard,
                format!("{} trailing bytes", actual_len - expected_len),
            ));
        }
        let (lo, hi) = layout.range(shard);
        let mut index = Vec::with_capacity(objects as usize);
        for i in 0..objects as usize {
            let at = HEADER_LEN + i * INDEX_ENTRY_LEN;
            let mut id = [0u8; 16];
            id.copy_from_slice(&blob[at..at + 16]);
            let mut hash = [0u8; 16];
            hash.copy_from_slice(&blob[at + 16..at + 32]);
            let entry = IndexEntry {
                id: ObjectId::from_bytes(id),
                hash,
                type_code: blob[at + 32],
                lifecycle: blob[at + 33],
                flags: blob[at + 34],
                offset: u32_at(&blob, at + 36),
            };
            if ObjectType::from_code(entry.type_code).is_none() || entry.lifecycle > 1 {
                return Err(SnapshotError::corrupt(
                    shard,
                    format!("index entry {i} has an unknown type or lifecycle"),
                ));
            }
            if entry.id < lo || entry.id > hi {
                return Err(SnapshotError::corrupt(
                    shard,
                    format!("object {} lies outside the shard's id range", entry.id),
                ));
            }
            if index
                .last()
                .is_some_and(|prev: &IndexEntry| prev.id >= entry.id)
            {
                return Err(SnapshotError::corrupt(shard, "index is not sorted by id"));
            }
            index.push(entry);
        }
        let mut blocks = Vec::with_capacity(block_count as usize);
        for b in 0..block_count as usize {
            let at = blocks_start as usize + b * BLOCK_ENTRY_LEN;
            let block = Block {
                data_offset: u64_at(&blob, at),
                compressed_len: u32_at(&blob, at + 8),
                raw_len: u32_at(&blob, at + 12),
                first_object: u32_at(&blob, at + 16),
            };
            let in_data = block
                .data_offset
                .checked_add(u64::from(block.compressed_len))
                .is_some_and(|end| end <= data_len);
            let ordered = match blocks.last() {
                None => block.first_object == 0,
                Some(prev) => {
                    let prev: &Block = prev;
                    block.first_object > prev.first_object
                }
            };
            if !in_data
                || !ordered
                || u64::from(block.first_object) >= objects
                || block.raw_len > MAX_BLOCK_RAW_BYTES
            {
                return Err(SnapshotError::corrupt(
                    shard,
                    format!("block {b} lies outside the blob or out of order"),
                ));
            }
            blocks.push(block);
        }
        if objects > 0 && blocks.is_empty() {
            return Err(SnapshotError::corrupt(shard, "objects but no blocks"));
        }
        for (b, block) in blocks.iter().enumerate() {
            let end = blocks
                .get(b + 1)
                .map_or(objects as usize, |n| n.first_object as usize);
            let entries = &index[block.first_object as usize..end];
            let offsets_ok = entries.windows(2).all(|w| w[0].offset < w[1].offset)
                && entries.last().is_none_or(|e| e.offset < block.raw_len)
                && entries.first().is_none_or(|e| e.offset == 0);
            if !offsets_ok {
                return Err(SnapshotError::corrupt(
                    shard,
                    format!("object offsets of block {b} are inconsistent"),
                ));
            }
        }
        let dictionary = (dictionary_len > 0).then(|| {
            zstd::dict::DecoderDictionary::copy(
                &blob[dictionary_start as usize..data_start as usize],
            )
        });
        Ok(Self {
            shard,
            layout,
            index,
            blocks,
            data_start: data_start as usize,
            dictionary,
            blob,
        })
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    pub fn layout(&self) -> ShardLayout {
        self.layout
    }

    /// The sorted index.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of the objects' encodings before compression (the sum of the raw block sizes).
    pub fn encoded_len(&self) -> usize {
        self.blocks.iter().map(|b| b.raw_len as usize).sum()
    }

    /// Bytes of the blob held in memory.
    pub fn blob_len(&self) -> usize {
        self.blob.len()
    }

    /// Bytes this loaded shard holds in memory: the blob, the index and the block table (the
    /// zstd dictionary's decoder state is not counted).
    pub fn held_bytes(&self) -> usize {
        self.blob.capacity()
            + self.index.capacity() * std::mem::size_of::<IndexEntry>()
            + self.blocks.capacity() * std::mem::size_of::<Block>()
    }

    fn block_of(&self, i: usize) -> usize {
        self.blocks
            .partition_point(|b| b.first_object as usize <= i)
            .saturating_sub(1)
    }

    fn decompress_block(&self, b: usize) -> Result<Vec<u8>, SnapshotError> {
        let block = self.blocks[b];
        let start = self.data_start + block.data_offset as usize;
        let compressed = &self.blob[start..start + block.compressed_len as usize];
        DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            let mut raw = Vec::with_capacity(block.raw_len as usize);
            let result = match &self.dictionary {
                Some(dict) => d.decompress_using_ddict(&mut raw, compressed, dict.as_ddict()),
                None => d.decompress(&mut raw, compressed),
            };
            result.map_err(|code| {
                SnapshotError::corrupt(
                    self.shard,
                    format!("block {b}: {}", zstd::zstd_safe::get_error_name(code)),
                )
            })?;
            if raw.len() != block.raw_len as usize {
                return Err(SnapshotError::corrupt(
                    self.shard,
                    format!(
                        "block {b} decompresses to {} bytes, not {}",
                        raw.len(),
                        block.raw_len
                    ),
                ));
            }
            Ok(raw)
        })
    }

    /// Where object `i`'s encoding lies in the raw bytes of its block `b`.
    fn range_in_block(&self, i: usize, b: usize, raw_len: usize) -> std::ops::Range<usize> {
        let next_in_other_block =
            b + 1 < self.blocks.len() && self.blocks[b + 1].first_object as usize == i + 1;
        let end = if next_in_other_block {
            raw_len
        } else {
            self.index.get(i + 1).map_or(raw_len, |n| n.offset as usize)
        };
        self.index[i].offset as usize..end
    }

    fn decode_in_block(
        &self,
        i: usize,
        b: usize,
        raw: &[u8],
    ) -> Result<DirectoryObject, SnapshotError> {
        let entry = &self.index[i];
        let bytes = &raw[self.range_in_block(i, b, raw.len())];
        let object = DirectoryObject::decode(bytes).map_err(|e| {
            SnapshotError::corrupt(
                self.shard,
                format!("object {} does not decode: {e}", entry.id),
            )
        })?;
        if object.id != entry.id || object.object_type.code() != entry.type_code {
            return Err(SnapshotError::corrupt(
                self.shard,
                format!("object {} does not match its index entry", entry.id),
            ));
        }
        Ok(object)
    }

    /// The raw bytes of object `i`'s block, from `cache` or decompressed into it.
    fn cached_block<'c>(
        &self,
        b: usize,
        cache: &'c mut BlockCache,
    ) -> Result<&'c [u8], SnapshotError> {
        Ok(match cache.blocks.entry(b) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.decompress_block(b)?),
        })
    }

    /// Decodes the object at index position `i`, reusing blocks already in `cache`.
    pub fn object(
        &self,
        i: usize,
        cache: &mut BlockCache,
    ) -> Result<DirectoryObject, SnapshotError> {
        let b = self.block_of(i);
        let raw = self.cached_block(b, cache)?;
        self.decode_in_block(i, b, raw)
    }

    /// The canonical encoding of the object at index position `i`, without decoding it.
    pub fn encoding<'c>(
        &self,
        i: usize,
        cache: &'c mut BlockCache,
    ) -> Result<&'c [u8], SnapshotError> {
        let b = self.block_of(i);
        let raw = self.cached_block(b, cache)?;
        let range = self.range_in_block(i, b, raw.len());
        Ok(&raw[range])
    }

    /// Every object of the shard, decoded, in id order.
    pub fn decode_all(&self) -> Result<Vec<DirectoryObject>, SnapshotError> {
        let mut out = Vec::with_capacity(self.index.len());
        for b in 0..self.blocks.len() {
            let raw = self.decompress_block(b)?;
            let end = self
                .blocks
                .get(b + 1)
                .map_or(self.index.len(), |n| n.first_object as usize);
            for i in self.blocks[b].first_object as usize..end {
                out.push(self.decode_in_block(i, b, &raw)?);
            }
        }
        Ok(out)
    }
}

/// Decompressed blocks of one shard, kept for the span of one piece of work.
#[derive(Debug, Default)]
pub struct BlockCache {
    blocks: HashMap<usize, Vec<u8>>,
}

impl BlockCache {
    pub fn clear(&mut self) {
        self.blocks.clear();
    }
}

thread_local! {
    static DECOMPRESSOR: RefCell<zstd::zstd_safe::DCtx<'static>> =
        RefCell::new(zstd::zstd_safe::DCtx::create());
}
