//! Go version strings ("go1.19.8", "go1.24.11 X:…", "devel go1.27-abc …"), the target
//! architecture and the calling-convention (ABI) rule that follows from both.

use std::cmp::Ordering;
use std::fmt;

/// The two architectures tlstap supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64 (GOARCH=amd64).
    Amd64,
    /// AArch64 (GOARCH=arm64).
    Arm64,
}

impl Arch {
    /// Go's name for the architecture.
    pub fn goarch(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.goarch())
    }
}

/// How Go functions receive arguments and return results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Abi {
    /// ABIInternal: arguments and results in registers (amd64 ≥ go1.17, arm64 ≥ go1.18).
    Register,
    /// ABI0: arguments and results on the stack.
    Stack,
}

impl Abi {
    /// The ABI that gc-compiled Go code of `version` uses on `arch`.
    ///
    /// The switch is per architecture and inclusive: amd64 go1.17.0 already uses registers,
    /// arm64 go1.17.x still uses the stack and go1.18.0 uses registers.
    pub fn for_version(arch: Arch, version: &GoVersion) -> Abi {
        let first_register_minor = match arch {
            Arch::Amd64 => 17,
            Arch::Arm64 => 18,
        };
        if version.major > 1 || (version.major == 1 && version.minor >= first_register_minor) {
            Abi::Register
        } else {
            Abi::Stack
        }
    }
}

/// A parsed Go toolchain version. Ordering and equality ignore `raw`.
#[derive(Debug, Clone)]
pub struct GoVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version (e.g. 19 for go1.19.8).
    pub minor: u32,
    /// Patch level; 0 for "go1.20", release candidates and development builds.
    pub patch: u32,
    /// The version string as stored in the binary, e.g. "go1.24.11 X:nocoverageredesign".
    pub raw: String,
}

impl GoVersion {
    /// Parses a Go version string. Accepts "go1.19.8", "go1.20", "go1.21rc2",
    /// "go1.24.11 X:exp", "devel go1.27-abcdef Tue …" and "go1.27-devel_…".
    /// Returns `None` when no "go<major>.<minor>" can be found.
    pub fn parse(raw: &str) -> Option<GoVersion> {
        let start = find_go_prefix(raw)?;
        let rest = raw.get(start + 2..)?;
        let (major, rest) = leading_number(rest)?;
        let rest = rest.strip_prefix('.')?;
        let (minor, rest) = leading_number(rest)?;
        let patch = rest.strip_prefix('.').and_then(leading_number).map_or(0, |(p, _)| p);
        Some(GoVersion { major, minor, patch, raw: raw.to_string() })
    }

    /// A version from its numbers (raw is rendered as "goM.m.p").
    pub fn new(major: u32, minor: u32, patch: u32) -> GoVersion {
        GoVersion { major, minor, patch, raw: format!("go{major}.{minor}.{patch}") }
    }

    /// True if this version is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    fn key(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.patch)
    }
}

/// Index of the "go" that starts a version: at the start or after a space, followed by a digit.
fn find_go_prefix(raw: &str) -> Option<usize> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(pos) = raw.get(i..)?.find("go") {
        let at = i + pos;
        let boundary = at == 0 || bytes.get(at - 1) == Some(&b' ');
        let digit = bytes.get(at + 2).is_some_and(u8::is_ascii_digit);
        if boundary && digit {
            return Some(at);
        }
        i = at + 2;
    }
    None
}

/// Splits a leading decimal number (at most 9 digits) off `s`.
fn leading_number(s: &str) -> Option<(u32, &str)> {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 || end > 9 {
        return None;
    }
    let n = s.get(..end)?.parse().ok()?;
    Some((n, s.get(end..)?))
}

impl PartialEq for GoVersion {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for GoVersion {}
impl PartialOrd for GoVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for GoVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> GoVersion {
        GoVersion::parse(s).unwrap()
    }

    #[test]
    fn parses_release_strings() {
        assert_eq!(v("go1.19.8").key(), (1, 19, 8));
        assert_eq!(v("go1.27.3").key(), (1, 27, 3));
        assert_eq!(v("go1.20").key(), (1, 20, 0));
        assert_eq!(v("go1.21rc2").key(), (1, 21, 0));
        assert_eq!(v("go1.9beta2").key(), (1, 9, 0));
        assert_eq!(v("go1.24.11 X:nocoverageredesign").key(), (1, 24, 11));
        assert_eq!(v("devel go1.27-3f6a4f4 Tue Jan 2 10:00:00 2026 +0000").key(), (1, 27, 0));
        assert_eq!(v("go1.27-devel_abcdef").key(), (1, 27, 0));
        assert_eq!(v("go1.24.11 X:nocoverageredesign").raw, "go1.24.11 X:nocoverageredesign");
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "go", "gox", "go1", "go1.", "1.19", "cargo1.2", "go99999999999.1"] {
            assert!(GoVersion::parse(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn abi_boundaries_are_per_arch_and_inclusive() {
        use Abi::*;
        use Arch::*;
        let cases = [
            (Amd64, "go1.16.15", Stack),
            (Amd64, "go1.17", Register),
            (Amd64, "go1.17.0", Register),
            (Amd64, "go1.17rc1", Register),
            (Amd64, "go1.17.13", Register),
            (Amd64, "go1.27.0", Register),
            (Arm64, "go1.17.13", Stack),
            (Arm64, "go1.17", Stack),
            (Arm64, "go1.18", Register),
            (Arm64, "go1.18.0", Register),
            (Arm64, "go1.26.1", Register),
            (Amd64, "go1.15.15", Stack),
            (Amd64, "go2.0", Register),
        ];
        for (arch, s, want) in cases {
            assert_eq!(Abi::for_version(arch, &v(s)), want, "{arch} {s}");
        }
    }

    #[test]
    fn ordering_ignores_raw() {
        assert!(v("go1.9") < v("go1.10"));
        assert!(v("go1.21.10") > v("go1.21.9"));
        assert_eq!(v("go1.20"), v("go1.20.0 X:foo"));
        assert!(v("go1.17.0").at_least(1, 17));
        assert!(!v("go1.16.9").at_least(1, 17));
    }
}
