//! Balloon bookkeeping (spec chapter 9): the set of guest frames the guest has released, as
//! disjoint half-open ranges of frame numbers.

use std::collections::BTreeMap;

/// A set of guest frame numbers kept as disjoint, non-adjacent `[start, end)` ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameSet {
    ranges: BTreeMap<u64, u64>,
    total: u64,
}

impl FrameSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of frames in the set.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Whether frame `f` is in the set.
    pub fn contains(&self, f: u64) -> bool {
        self.ranges
            .range(..=f)
            .next_back()
            .is_some_and(|(_, e)| f < *e)
    }

    /// Whether any frame of `[start, end)` is in the set.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        if self
            .ranges
            .range(..start)
            .next_back()
            .is_some_and(|(_, e)| *e > start)
        {
            return true;
        }
        self.ranges.range(start..end).next().is_some()
    }

    /// Whether every frame of `[start, end)` is in the set.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        self.ranges
            .range(..=start)
            .next_back()
            .is_some_and(|(_, e)| *e >= end)
    }

    /// Adds `[start, end)`, merging with neighbours.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, re)| **re >= start)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, b) in overlapping {
            self.ranges.remove(&a);
            self.total -= b - a;
            s = s.min(a);
            e = e.max(b);
        }
        self.ranges.insert(s, e);
        self.total += e - s;
    }

    /// Removes `[start, end)`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(_, re)| **re > start)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, b) in overlapping {
            self.ranges.remove(&a);
            self.total -= b - a;
            if a < start {
                self.ranges.insert(a, start);
                self.total += start - a;
            }
            if b > end {
                self.ranges.insert(end, b);
                self.total += b - end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn insert_remove_merge() {
        let mut s = FrameSet::new();
        s.insert(10, 20);
        s.insert(20, 30);
        assert_eq!(s.len(), 20);
        assert!(s.covers(10, 30));
        assert!(!s.covers(9, 30));
        assert!(s.overlaps(29, 40));
        assert!(!s.overlaps(30, 40));
        s.remove(15, 16);
        assert!(!s.contains(15));
        assert!(s.contains(16));
        assert_eq!(s.len(), 19);
        assert!(!s.covers(10, 30));
    }

    proptest! {
        #[test]
        fn matches_a_set_model(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..16), 0..64)) {
            let mut s = FrameSet::new();
            let mut m = BTreeSet::new();
            for (ins, a, n) in ops {
                let b = a + n;
                if ins { s.insert(a, b); m.extend(a..b); } else { s.remove(a, b); for f in a..b { m.remove(&f); } }
                prop_assert_eq!(s.len(), m.len() as u64);
                for f in 0..80 { prop_assert_eq!(s.contains(f), m.contains(&f)); }
                prop_assert_eq!(s.overlaps(a, b), (a..b).any(|f| m.contains(&f)));
                prop_assert_eq!(s.covers(a, b), (a..b).all(|f| m.contains(&f)));
            }
        }
    }
}
