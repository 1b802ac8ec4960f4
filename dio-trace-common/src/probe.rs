//! Which kernel mechanism produced a record.

/// How a probe is attached. The same facts can arrive through any of them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Fentry = 1,
    Fexit = 2,
    Kprobe = 3,
    Kretprobe = 4,
    /// BTF-typed tracepoint (`tp_btf`).
    Tracepoint = 5,
    /// Raw tracepoint: the same arguments, untyped, read with probe reads.
    /// Attached by name, so it reaches a module's tracepoints (ext4 as a
    /// module), which aya 0.14's `tp_btf` cannot.
    RawTracepoint = 6,
}

impl Mechanism {
    /// The mechanism with this number, if any.
    pub fn from_u32(n: u32) -> Option<Self> {
        Some(match n {
            1 => Mechanism::Fentry,
            2 => Mechanism::Fexit,
            3 => Mechanism::Kprobe,
            4 => Mechanism::Kretprobe,
            5 => Mechanism::Tracepoint,
            6 => Mechanism::RawTracepoint,
            _ => return None,
        })
    }

    /// Short stable name used in reports and NDJSON.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Fentry => "fentry",
            Mechanism::Fexit => "fexit",
            Mechanism::Kprobe => "kprobe",
            Mechanism::Kretprobe => "kretprobe",
            Mechanism::Tracepoint => "tracepoint",
            Mechanism::RawTracepoint => "raw_tracepoint",
        }
    }
}
