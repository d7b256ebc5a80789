//! Line diffs for people: what `bootstrap plan` shows for a file it would
//! change, in the unified format of `diff -u` (`---`/`+++` header, `@@`
//! hunks, two lines of context, `\ No newline at end of file`).
//!
//! Owns the edit script (Myers' O(ND) algorithm after trimming the common
//! head and tail) and its rendering. Pure: no I/O. Shown, never applied:
//! past `MAX_EDITS` changed lines the rest of the changed region is shown
//! as removed and added whole, which is still a correct diff, only not the
//! shortest one.
//!
//! Hand-written rather than a diff crate: this display is the only diff
//! the agent makes, and `similar` (generic over every algorithm and hook)
//! cost 637 KiB of the static binary's 10 MB budget.

use std::fmt::Write as _;

/// Lines of unchanged context around each change (as `bootstrap plan` has
/// always shown).
const CONTEXT: usize = 2;

/// Changed lines past which the search for the shortest diff stops. The
/// search keeps O(D²) numbers: 500 edits are about 1 MiB at most, on nodes
/// whose whole agent budget is 24 MiB. A plan that changes more lines than
/// this is a rewrite a person does not read line by line anyway.
const MAX_EDITS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    Delete,
    Insert,
}

/// The unified diff from `old` to `new` under the given header names;
/// empty when they are equal.
pub(crate) fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = edit_script(&a, &b, MAX_EDITS);
    // (old line, new line) before each op, and after the last.
    let mut pos = Vec::with_capacity(ops.len() + 1);
    let (mut i, mut j) = (0, 0);
    for op in &ops {
        pos.push((i, j));
        match op {
            Op::Equal => (i, j) = (i + 1, j + 1),
            Op::Delete => i += 1,
            Op::Insert => j += 1,
        }
    }
    pos.push((i, j));
    let mut out = String::new();
    let hunks = hunks(&ops);
    if hunks.is_empty() {
        return out;
    }
    let _ = writeln!(out, "--- {old_name}\n+++ {new_name}");
    for (start, end) in hunks {
        let ((os, ns), (oe, ne)) = (pos[start], pos[end]);
        let _ = writeln!(out, "@@ -{} +{} @@", range(os, oe - os), range(ns, ne - ns));
        for k in start..end {
            let (oi, ni) = pos[k];
            let (sign, line) = match ops[k] {
                Op::Equal => (' ', a[oi]),
                Op::Delete => ('-', a[oi]),
                Op::Insert => ('+', b[ni]),
            };
            out.push(sign);
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    out
}

/// `diff -u`'s range: 1-based start and length; the length is left out
/// when it is 1, and an empty range names the line before it.
fn range(start: usize, len: usize) -> String {
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{len}", start + 1),
    }
}

/// Op-index ranges `[start, end)` of the hunks: every change with CONTEXT
/// ops around it, joined where they touch.
fn hunks(ops: &[Op]) -> Vec<(usize, usize)> {
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for (k, _) in ops.iter().enumerate().filter(|(_, op)| **op != Op::Equal) {
        let (start, end) = (k.saturating_sub(CONTEXT), (k + 1 + CONTEXT).min(ops.len()));
        match hunks.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    hunks
}

/// The edit script from `a` to `b`: the common head and tail, and
/// between them the shortest script if it has at most `max_edits` edits.
fn edit_script(a: &[&str], b: &[&str], max_edits: usize) -> Vec<Op> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_mid, b_mid) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops = vec![Op::Equal; head];
    match myers(a_mid, b_mid, max_edits) {
        Some(mid) => ops.extend(mid),
        None => {
            ops.extend(std::iter::repeat_n(Op::Delete, a_mid.len()));
            ops.extend(std::iter::repeat_n(Op::Insert, b_mid.len()));
        }
    }
    ops.extend(std::iter::repeat_n(Op::Equal, tail));
    ops
}

/// Myers' greedy forward search for the shortest edit script, then a walk
/// back through the frontier kept after each step. `None` past `max_edits`.
fn myers(a: &[&str], b: &[&str], max_edits: usize) -> Option<Vec<Op>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let offset = n + m + 1;
    // v[k + offset]: the furthest x reached on diagonal k = x - y.
    let mut v = vec![0isize; 2 * offset as usize + 1];
    // frontiers[d]: v on diagonals -(d-1)..=(d-1) before step d.
    let mut frontiers: Vec<Vec<isize>> = Vec::new();
    for d in 0..=(n + m).min(max_edits as isize) {
        frontiers.push(match d {
            0 => Vec::new(),
            _ => v[(offset - d + 1) as usize..(offset + d) as usize].to_vec(),
        });
        for k in (-d..=d).step_by(2) {
            let at = |k: isize| v[(k + offset) as usize];
            let mut x = if k == -d || (k != d && at(k - 1) < at(k + 1)) {
                at(k + 1)
            } else {
                at(k - 1) + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                (x, y) = (x + 1, y + 1);
            }
            v[(k + offset) as usize] = x;
            if x >= n && y >= m {
                return Some(walk_back(&frontiers, n, m));
            }
        }
    }
    None
}

fn walk_back(frontiers: &[Vec<isize>], n: isize, m: isize) -> Vec<Op> {
    let mut ops = Vec::new();
    let (mut x, mut y) = (n, m);
    for (d, frontier) in frontiers.iter().enumerate().skip(1).rev() {
        let d = d as isize;
        let at = |k: isize| frontier[(k + d - 1) as usize];
        let k = x - y;
        let down = k == -d || (k != d && at(k - 1) < at(k + 1));
        let prev_k = if down { k + 1 } else { k - 1 };
        let prev_x = at(prev_k);
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            ops.push(Op::Equal);
            (x, y) = (x - 1, y - 1);
        }
        ops.push(if down { Op::Insert } else { Op::Delete });
        (x, y) = (prev_x, prev_y);
    }
    // Step 0 only followed the diagonal from (0, 0).
    ops.extend(std::iter::repeat_n(Op::Equal, x as usize));
    ops.reverse();
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<&str> {
        s.split_inclusive('\n').collect()
    }

    /// Replays `ops` on `a`, checking every Equal against `b`.
    fn apply<'a>(ops: &[Op], a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
        let (mut i, mut j, mut out) = (0, 0, Vec::new());
        for op in ops {
            match op {
                Op::Equal => {
                    assert_eq!(a[i], b[j]);
                    out.push(a[i]);
                    (i, j) = (i + 1, j + 1);
                }
                Op::Delete => i += 1,
                Op::Insert => {
                    out.push(b[j]);
                    j += 1;
                }
            }
        }
        assert_eq!(i, a.len(), "every old line is used");
        out
    }

    fn lcs(a: &[&str], b: &[&str]) -> usize {
        let mut t = vec![vec![0; b.len() + 1]; a.len() + 1];
        for i in 0..a.len() {
            for j in 0..b.len() {
                t[i + 1][j + 1] = if a[i] == b[j] {
                    t[i][j] + 1
                } else {
                    t[i][j + 1].max(t[i + 1][j])
                };
            }
        }
        t[a.len()][b.len()]
    }

    #[test]
    fn equal_texts_have_an_empty_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y"), "");
        assert_eq!(unified("", "", "x", "y"), "");
    }

    #[test]
    fn a_new_file_is_all_added_lines() {
        assert_eq!(
            unified("", "a = 1\nb = 2\n", "f (on disk)", "f (desired)"),
            "--- f (on disk)\n+++ f (desired)\n@@ -0,0 +1,2 @@\n+a = 1\n+b = 2\n"
        );
    }

    #[test]
    fn a_changed_line_is_shown_with_two_lines_of_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n";
        let new = "1\n2\n3\nfour\n5\n6\n7\n";
        assert_eq!(
            unified(old, new, "a", "b"),
            "--- a\n+++ b\n@@ -2,5 +2,5 @@\n 2\n 3\n-4\n+four\n 5\n 6\n"
        );
    }

    #[test]
    fn changes_far_apart_are_two_hunks_and_close_ones_one() {
        let text = |changed: &[usize]| -> String {
            (1..=20)
                .map(|i| match changed.contains(&i) {
                    true => format!("line {i} changed\n"),
                    false => format!("line {i}\n"),
                })
                .collect()
        };
        let d = unified(&text(&[]), &text(&[3, 18]), "a", "b");
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
        assert!(
            d.contains("@@ -1,5 +1,5 @@\n line 1\n line 2\n-line 3\n+line 3 changed\n line 4\n line 5\n@@ -16,5 +16,5 @@\n"),
            "{d}"
        );
        // Four unchanged lines between two changes: one hunk.
        let d = unified(&text(&[]), &text(&[3, 8]), "a", "b");
        assert_eq!(d.matches("@@ -").count(), 1, "{d}");
        assert!(d.contains("@@ -1,10 +1,10 @@\n"), "{d}");
        // Five: two.
        let d = unified(&text(&[]), &text(&[3, 9]), "a", "b");
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
    }

    #[test]
    fn a_last_line_without_newline_is_marked() {
        assert_eq!(
            unified("a\nb", "a\nc\n", "x", "y"),
            "--- x\n+++ y\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n"
        );
    }

    #[test]
    fn removing_every_line_leaves_an_empty_new_range() {
        assert_eq!(
            unified("a\n", "", "x", "y"),
            "--- x\n+++ y\n@@ -1 +0,0 @@\n-a\n"
        );
    }

    #[test]
    fn the_script_is_shortest_and_rebuilds_the_new_text() {
        // Deterministic pseudo-random texts over a small alphabet, so lines
        // repeat and the shortest script is not the obvious one.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let words = ["a\n", "b\n", "c\n", "d\n", "e"];
        for _ in 0..300 {
            let (la, lb) = (next() % 12, next() % 12);
            let a: Vec<&str> = (0..la).map(|_| words[(next() % 4) as usize]).collect();
            let b: Vec<&str> = (0..lb).map(|_| words[(next() % 4) as usize]).collect();
            let ops = edit_script(&a, &b, MAX_EDITS);
            assert_eq!(apply(&ops, &a, &b), b, "{a:?} -> {b:?}");
            let equal = ops.iter().filter(|o| **o == Op::Equal).count();
            assert_eq!(equal, lcs(&a, &b), "{a:?} -> {b:?}: {ops:?}");
        }
    }

    #[test]
    fn past_the_edit_limit_the_changed_region_is_replaced_whole() {
        let old: String = (0..50).map(|i| format!("old {i}\n")).collect();
        let new: String = (0..50).map(|i| format!("new {i}\n")).collect();
        let (a, b) = (lines(&old), lines(&new));
        let ops = edit_script(&a, &b, 10);
        assert_eq!(apply(&ops, &a, &b), b);
        assert_eq!(ops.iter().filter(|o| **o == Op::Delete).count(), 50);
        let shortest = edit_script(&a, &b, MAX_EDITS);
        assert_eq!(apply(&shortest, &a, &b), b);
    }
}
