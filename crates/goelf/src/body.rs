//! Choosing a Go function's body when an ABI wrapper carries the same name.
//!
//! Since Go 1.17 the linker may emit two functions for one Go name: the body and an ABI
//! wrapper (ABI0 → ABIInternal for Go functions called from assembly, ABIInternal → ABI0 for
//! assembly functions called from Go). The pclntab names both alike; `.symtab` suffixes the
//! ABI0 one with `.abi0` (so `X.abi0` is the *body* of an assembly function, but the
//! *wrapper* of a Go function). Size does not tell them apart — a wrapper that spills
//! register arguments is often larger than a small body (e.g. `internal/bytealg.countGeneric`
//! is 41 bytes, its ABI0 wrapper 57) — so the rule is structural:
//!
//! 1. A wrapper branches (CALL/JMP, B/BL) to the body's entry; the body does not branch to
//!    the wrapper's entry. If exactly one of the two branches to the other, the other is the
//!    body.
//! 2. Otherwise (undecodable or unrelated code) keep the larger, then the lower address.
//!
//! Each comparison decodes both candidates (up to 8 MiB each), so a file naming one function
//! hundreds of times would be decoded hundreds of times: [`Candidates`] stops comparing after
//! [`MAX_CANDIDATES`], which no Go linker output reaches.

use crate::decode::branch_targets;
use crate::elf::Image;

/// A candidate function: (entry vaddr, size).
pub(crate) type Span = (u64, u64);

/// Functions compared for one name. Go emits at most two per name (a body and its ABI
/// wrapper); more come only from a crafted file, whose further copies are ignored.
pub(crate) const MAX_CANDIDATES: usize = 4;

/// The best function found so far for each wanted name, and how many were compared.
pub(crate) struct Candidates<T> {
    best: Vec<Option<T>>,
    seen: Vec<usize>,
}

impl<T: Copy> Candidates<T> {
    pub(crate) fn new(names: usize) -> Self {
        Candidates { best: vec![None; names], seen: vec![0; names] }
    }

    /// Offers `candidate` for name `k` (ignored past [`MAX_CANDIDATES`] or out of range).
    pub(crate) fn offer(&mut self, image: &Image<'_>, k: usize, candidate: T, span: impl Fn(&T) -> Span) {
        let (Some(slot), Some(seen)) = (self.best.get_mut(k), self.seen.get_mut(k)) else { return };
        if *seen >= MAX_CANDIDATES {
            return;
        }
        *seen += 1;
        *slot = Some(prefer_body(image, *slot, candidate, span));
    }

    pub(crate) fn into_found(self) -> Vec<Option<T>> {
        self.best
    }
}

/// Keeps the body among `current` and `candidate` (see the module rule).
fn prefer_body<T: Copy>(image: &Image<'_>, current: Option<T>, candidate: T, span: impl Fn(&T) -> Span) -> T {
    let Some(cur) = current else { return candidate };
    match pick(image, span(&cur), span(&candidate)) {
        Pick::First => cur,
        Pick::Second => candidate,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    First,
    Second,
}

fn pick(image: &Image<'_>, a: Span, b: Span) -> Pick {
    if a.0 != b.0 {
        let a_calls_b = branches_to(image, a, b.0);
        let b_calls_a = branches_to(image, b, a.0);
        if a_calls_b != b_calls_a {
            return if a_calls_b { Pick::Second } else { Pick::First };
        }
    }
    by_size(a, b)
}

/// Fallback: larger size, then lower address.
fn by_size(a: Span, b: Span) -> Pick {
    if b.1 > a.1 || (b.1 == a.1 && b.0 < a.0) {
        Pick::Second
    } else {
        Pick::First
    }
}

fn branches_to(image: &Image<'_>, f: Span, target: u64) -> bool {
    match image.bytes_at(f.0, f.1) {
        Some(code) => branch_targets(image.arch, f.0, code).contains(&target),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_fallback_is_order_independent() {
        assert_eq!(by_size((0x1000, 0x40), (0x2000, 0x300)), Pick::Second);
        assert_eq!(by_size((0x2000, 0x300), (0x1000, 0x40)), Pick::First);
        assert_eq!(by_size((0x20, 8), (0x10, 8)), Pick::Second);
        assert_eq!(by_size((0x10, 8), (0x20, 8)), Pick::First);
    }
}
