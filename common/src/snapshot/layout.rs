//! Shard layout: the 128-bit id space cut into 2^bits contiguous ranges by the id's top bits.

use crate::id::ObjectId;
use crate::snapshot::shard::ShardWriter;

/// How many shards a snapshot has (a power of two) and which shard holds which id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    bits: u8,
}

impl ShardLayout {
    /// The largest shard count a snapshot may have (2^16).
    pub const MAX_BITS: u8 = 16;
    /// Objects a shard should hold, about, when the count is chosen from the tenant size.
    pub const TARGET_OBJECTS_PER_SHARD: u64 = 4096;
    /// Fewest shards a tenant gets, so that small tenants still spread over a few workers.
    pub const MIN_BITS: u8 = 6;

    /// A layout of 2^bits shards (bits clamped to [`Self::MAX_BITS`]).
    pub fn new(bits: u8) -> Self {
        Self {
            bits: bits.min(Self::MAX_BITS),
        }
    }

    /// The shard count for a tenant of `objects` objects: 64 for small tenants, then one shard
    /// per about 4,000 objects (256 shards at a million). At about 260 stored bytes an object a
    /// shard blob is then about 1 MiB: big enough that a blob store's per-object cost (a put and
    /// its acks, a read's round trip) stays small against its bytes, small enough for one task.
    pub fn for_object_count(objects: u64) -> Self {
        let wanted = objects.div_ceil(Self::TARGET_OBJECTS_PER_SHARD).max(1);
        let bits = 64 - (wanted - 1).leading_zeros();
        Self::new((bits as u8).clamp(Self::MIN_BITS, Self::MAX_BITS))
    }

    pub fn bits(self) -> u8 {
        self.bits
    }

    pub fn count(self) -> u32 {
        1 << self.bits
    }

    /// The shard that holds `id`.
    pub fn shard_of(self, id: ObjectId) -> u32 {
        if self.bits == 0 {
            0
        } else {
            (id.0 >> (128 - u32::from(self.bits))) as u32
        }
    }

    /// The first and last id of shard `shard` (inclusive).
    pub fn range(self, shard: u32) -> (ObjectId, ObjectId) {
        if self.bits == 0 {
            return (ObjectId(0), ObjectId(u128::MAX));
        }
        let shift = 128 - u32::from(self.bits);
        let lo = u128::from(shard) << shift;
        let hi = lo | ((1u128 << shift) - 1);
        (ObjectId(lo), ObjectId(hi))
    }

    /// One empty writer per shard, in shard order.
    pub fn writers(self) -> Vec<ShardWriter> {
        (0..self.count())
            .map(|i| ShardWriter::new(self, i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_tenant_size() {
        assert_eq!(ShardLayout::for_object_count(0).count(), 64);
        assert_eq!(ShardLayout::for_object_count(10_000).count(), 64);
        assert_eq!(ShardLayout::for_object_count(100_000).count(), 64);
        assert_eq!(ShardLayout::for_object_count(300_000).count(), 128);
        assert_eq!(ShardLayout::for_object_count(1_000_000).count(), 256);
        assert_eq!(ShardLayout::for_object_count(4_000_000).count(), 1024);
        assert_eq!(ShardLayout::for_object_count(u64::MAX).count(), 1 << 16);
    }

    #[test]
    fn ranges_cover_the_id_space() {
        let layout = ShardLayout::new(3);
        assert_eq!(layout.range(0).0, ObjectId(0));
        assert_eq!(layout.range(7).1, ObjectId(u128::MAX));
        for s in 0..7 {
            assert_eq!(layout.range(s).1 .0 + 1, layout.range(s + 1).0 .0);
            assert_eq!(layout.shard_of(layout.range(s).1), s);
        }
        assert_eq!(ShardLayout::new(0).shard_of(ObjectId(u128::MAX)), 0);
    }
}
