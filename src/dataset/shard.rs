//! `--shard i/n`: a deterministic, contiguous 1/n of a dataset's rows, so a Kubernetes
//! Indexed Job or a Slurm array can split a big dataset and `cat` of the shards' outputs in
//! index order is the whole run's output.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Row indices of this shard among `rows`: ⌊i·N/n⌋ .. ⌊(i+1)·N/n⌋.
    pub fn range(&self, rows: usize) -> Range<usize> {
        let at = |i: usize| (i as u128 * rows as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("a shard is i/n with 0 <= i < n (e.g. 0/4), not {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(usage)?;
        let index: usize = i.trim().parse().map_err(|_| usage())?;
        let count: usize = n.trim().parse().map_err(|_| usage())?;
        if count == 0 || index >= count {
            return Err(usage());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_rows_in_order() {
        for rows in [0usize, 1, 7, 24, 805] {
            for count in 1..=6 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(rows);
                    assert_eq!(r.start, next);
                    assert!(r.len() <= rows / count + 1);
                    next = r.end;
                }
                assert_eq!(next, rows);
            }
        }
    }

    #[test]
    fn parse_rejects_what_is_not_a_shard() {
        assert_eq!("2/5".parse::<Shard>(), Ok(Shard { index: 2, count: 5 }));
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
