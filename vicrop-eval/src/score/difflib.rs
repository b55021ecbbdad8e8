//! A port of Python's `difflib.SequenceMatcher(None, a, b).ratio()` over Unicode scalar values
//! (what Python compares for `str`), as the ViCrop reference uses it to pick POPE's yes/no and
//! V*'s option (`get_score.py::str_simi`).
//!
//! The ratio is `2 * M / (len(a) + len(b))` (1.0 when both are empty) where `M` is the size of
//! the matching blocks that `get_matching_blocks` finds: the longest matching block
//! (`find_longest_match`, earliest in `a`, then earliest in `b`, among the longest), then the
//! same recursively left and right of it. This is not the longest common subsequence: `abcd`
//! against `bcda` matches `bcd` only. With `isjunk=None` no element is junk, but the
//! `autojunk` heuristic applies: when `b` has 200 or more elements, every element occurring
//! more than `len(b) / 100 + 1` times in `b` is "popular" and left out of the index `b2j`, so
//! no match starts from it (a match found elsewhere may still be extended over popular
//! elements).

use std::collections::HashMap;

/// `SequenceMatcher(None, a, b)` with `autojunk=True`, over the characters of two strings.
#[derive(Debug, Clone)]
pub struct SequenceMatcher {
    a: Vec<char>,
    b: Vec<char>,
    /// For each non-popular element of `b`, its indices in increasing order.
    b2j: HashMap<char, Vec<usize>>,
}

/// A matching block: `a[a..a + size] == b[b..b + size]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Match {
    /// Start in `a`.
    pub a: usize,
    /// Start in `b`.
    pub b: usize,
    /// Length.
    pub size: usize,
}

impl SequenceMatcher {
    /// Builds the matcher (and `b`'s index with the autojunk heuristic) for `a` against `b`.
    pub fn new(a: &str, b: &str) -> Self {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut b2j: HashMap<char, Vec<usize>> = HashMap::new();
        for (i, &elt) in b.iter().enumerate() {
            b2j.entry(elt).or_default().push(i);
        }
        // autojunk: purge popular elements (isjunk is None, so there is no junk set)
        let n = b.len();
        if n >= 200 {
            let ntest = n / 100 + 1;
            b2j.retain(|_, idxs| idxs.len() <= ntest);
        }
        Self { a, b, b2j }
    }

    /// `find_longest_match(alo, ahi, blo, bhi)`: the longest block with `alo <= i < ahi`,
    /// `blo <= j < bhi`; among equals, the one starting earliest in `a`, then in `b`; extended
    /// on both ends by equal elements (popular ones included, since none is junk).
    pub fn find_longest_match(&self, alo: usize, ahi: usize, blo: usize, bhi: usize) -> Match {
        let (a, b) = (&self.a, &self.b);
        let (mut besti, mut bestj, mut bestsize) = (alo, blo, 0usize);
        // j2len[j] = length of the longest match ending with a[i-1] and b[j]
        let mut j2len: HashMap<usize, usize> = HashMap::new();
        let mut newj2len: HashMap<usize, usize> = HashMap::new();
        for (i, ai) in a.iter().enumerate().take(ahi).skip(alo) {
            newj2len.clear();
            if let Some(indices) = self.b2j.get(ai) {
                for &j in indices {
                    if j < blo {
                        continue;
                    }
                    if j >= bhi {
                        break;
                    }
                    let prev = match j.checked_sub(1) {
                        Some(jm1) => j2len.get(&jm1).copied().unwrap_or(0),
                        None => 0,
                    };
                    let k = prev + 1;
                    newj2len.insert(j, k);
                    if k > bestsize {
                        besti = i + 1 - k;
                        bestj = j + 1 - k;
                        bestsize = k;
                    }
                }
            }
            std::mem::swap(&mut j2len, &mut newj2len);
        }
        // extend by equal (non-junk: with isjunk None, every) elements on each end
        while besti > alo && bestj > blo && a[besti - 1] == b[bestj - 1] {
            besti -= 1;
            bestj -= 1;
            bestsize += 1;
        }
        while besti + bestsize < ahi
            && bestj + bestsize < bhi
            && a[besti + bestsize] == b[bestj + bestsize]
        {
            bestsize += 1;
        }
        // (the junk-extension loops of difflib do nothing: the junk set is empty)
        Match {
            a: besti,
            b: bestj,
            size: bestsize,
        }
    }

    /// `get_matching_blocks()` without the final sentinel and without merging adjacent blocks
    /// (neither changes the ratio): blocks sorted by position.
    pub fn matching_blocks(&self) -> Vec<Match> {
        let mut queue = vec![(0, self.a.len(), 0, self.b.len())];
        let mut blocks = Vec::new();
        while let Some((alo, ahi, blo, bhi)) = queue.pop() {
            let m = self.find_longest_match(alo, ahi, blo, bhi);
            if m.size > 0 {
                blocks.push(m);
                if alo < m.a && blo < m.b {
                    queue.push((alo, m.a, blo, m.b));
                }
                if m.a + m.size < ahi && m.b + m.size < bhi {
                    queue.push((m.a + m.size, ahi, m.b + m.size, bhi));
                }
            }
        }
        blocks.sort();
        blocks
    }

    /// `ratio()`: `2.0 * matches / (len(a) + len(b))`, or 1.0 when both are empty.
    pub fn ratio(&self) -> f64 {
        let matches: usize = self.matching_blocks().iter().map(|m| m.size).sum();
        let length = self.a.len() + self.b.len();
        if length == 0 {
            1.0
        } else {
            2.0 * matches as f64 / length as f64
        }
    }
}

/// `difflib.SequenceMatcher(None, a, b).ratio()` (the reference's `str_simi(a, b)`).
pub fn ratio(a: &str, b: &str) -> f64 {
    SequenceMatcher::new(a, b).ratio()
}

/// The index of the candidate closest to `text` by [`ratio`], the first one on ties (the
/// reference's `get_index`: `simis.index(max(simis))`). `None` when there are no candidates.
pub fn closest<S: AsRef<str>>(text: &str, candidates: &[S]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let r = ratio(text, c.as_ref());
        if best.is_none_or(|(_, br)| r > br) {
            best = Some((i, r));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_an_lcs() {
        // LCS would be 3 either way; difflib finds "bcd" then nothing left of it in b
        assert_eq!(ratio("abcd", "bcda"), 0.75);
        assert_eq!(ratio("", ""), 1.0);
        assert_eq!(ratio("a", ""), 0.0);
        assert_eq!(closest("", &["yes", "no"]), Some(0));
        assert_eq!(closest("No", &["yes", "no"]), Some(1));
    }
}
