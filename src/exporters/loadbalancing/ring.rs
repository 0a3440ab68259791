//! The consistent-hash ring of the `loadbalancing` exporter.
//!
//! Every member (a backend's `host:port`) owns [`VIRTUAL_NODES`] points on a 64-bit circle; a
//! key belongs to the member owning the first point at or after the key's hash. Removing a
//! member hands each of its arcs to the member owning the next point, and adding one takes
//! arcs only from the others, so a change of one member among N moves about 1/N of the keys
//! and no key moves between two members that stayed.

/// Points per member: with 1000, each member's share of the circle is within a few percent
/// of 1/N.
pub const VIRTUAL_NODES: u32 = 1000;

/// A stable 64-bit hash (FNV-1a, then the MurmurHash3 finalizer to spread the bits): the
/// same on every agent and every version, so agents sharing a backend list route alike.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// (point, index into `members`), sorted.
    points: Vec<(u64, u32)>,
    /// Sorted, distinct.
    members: Vec<String>,
}

impl Ring {
    pub fn new(members: impl IntoIterator<Item = String>) -> Ring {
        let mut members: Vec<String> = members.into_iter().collect();
        members.sort();
        members.dedup();
        let mut points = Vec::with_capacity(members.len() * VIRTUAL_NODES as usize);
        for (i, m) in members.iter().enumerate() {
            for v in 0..VIRTUAL_NODES {
                points.push((hash64(format!("{m}#{v}").as_bytes()), i as u32));
            }
        }
        // Ties (vanishingly rare) are broken by member order, so every agent agrees.
        points.sort_unstable();
        Ring { points, members }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index (into [`Ring::members`]) of the member owning `key_hash`; `None` when empty.
    pub fn owner_index(&self, key_hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|(p, _)| *p < key_hash);
        let (_, m) = self.points[i % self.points.len()];
        Some(m as usize)
    }

    pub fn owner(&self, key_hash: u64) -> Option<&str> {
        self.owner_index(key_hash).map(|i| self.members[i].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:4317")).collect()
    }

    fn keys(n: u64) -> Vec<u64> {
        (0..n).map(|i| hash64(&i.to_be_bytes())).collect()
    }

    #[test]
    fn removing_one_of_n_moves_only_its_keys_about_one_nth() {
        let n = 10;
        let all = Ring::new(members(n));
        let gone = "10.0.0.3:4317";
        let fewer = Ring::new(members(n).into_iter().filter(|m| m != gone));
        let keys = keys(100_000);
        let mut moved = 0;
        for k in &keys {
            let (before, after) = (all.owner(*k).unwrap(), fewer.owner(*k).unwrap());
            if before != after {
                assert_eq!(before, gone, "a key moved between two members that stayed");
                moved += 1;
            } else {
                assert_ne!(before, gone);
            }
        }
        let share = moved as f64 / keys.len() as f64;
        // 1/N = 0.10.
        assert!((0.08..=0.12).contains(&share), "moved {share}");
    }

    #[test]
    fn adding_one_moves_about_one_n_plus_first_and_only_to_it() {
        let n = 10;
        let before = Ring::new(members(n));
        let after = Ring::new(members(n + 1));
        let added = format!("10.0.0.{n}:4317");
        let keys = keys(100_000);
        let mut moved = 0;
        for k in &keys {
            let (b, a) = (before.owner(*k).unwrap(), after.owner(*k).unwrap());
            if b != a {
                assert_eq!(a, added, "a key moved to a member that was already there");
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        // 1/(N+1) = 0.0909.
        assert!((0.07..=0.11).contains(&share), "moved {share}");
    }

    #[test]
    fn shares_are_near_even_and_the_ring_is_order_independent() {
        let m = members(3);
        let ring = Ring::new(m.clone());
        let reversed = Ring::new(m.into_iter().rev());
        let keys = keys(90_000);
        let mut counts = [0u64; 3];
        for k in &keys {
            let i = ring.owner_index(*k).unwrap();
            assert_eq!(ring.owner(*k), reversed.owner(*k));
            counts[i] += 1;
        }
        for c in counts {
            // 30 000 each when even; within 6 %.
            assert!((28_200..=31_800).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn empty_ring_has_no_owner_and_one_member_owns_all() {
        assert_eq!(Ring::new(Vec::new()).owner(42), None);
        let one = Ring::new(vec!["a:1".to_string()]);
        assert!(keys(1000).iter().all(|k| one.owner(*k) == Some("a:1")));
    }
}
