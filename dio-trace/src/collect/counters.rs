//! The kernel's per-CPU counters, summed.

use aya::maps::{MapData, PerCpuArray};
use dio_trace_common::counters::{Counter, CounterSlots};

pub struct Counters {
    map: PerCpuArray<MapData, CounterSlots>,
}

/// One reading of every counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading(pub [u64; Counter::ALL.len()]);

impl Reading {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// name -> value, as trace files store them.
    pub fn named(&self) -> std::collections::BTreeMap<String, u64> {
        Counter::ALL
            .iter()
            .map(|c| (c.name().to_owned(), self.get(*c)))
            .collect()
    }

    /// Back from `named` (unknown names ignored, missing ones zero).
    pub fn from_named(m: &std::collections::BTreeMap<String, u64>) -> Self {
        let mut r = Reading::default();
        for c in Counter::ALL {
            r.0[c as usize] = m.get(c.name()).copied().unwrap_or(0);
        }
        r
    }
}

impl Counters {
    pub fn new(map: PerCpuArray<MapData, CounterSlots>) -> Self {
        Self { map }
    }

    pub fn read(&self) -> Reading {
        let mut r = Reading::default();
        if let Ok(cpus) = self.map.get(&0, 0) {
            for slots in cpus.iter() {
                for c in Counter::ALL {
                    r.0[c as usize] += slots.0[c as usize];
                }
            }
        }
        r
    }
}
