//! Ordered writes the kernel counted instead of sending
//! (`CONFIG_COUNT_ORDERED`, `dio_trace_common::ordered`): the per-CPU map
//! read at every tick and once more at the end, summed over CPUs, and
//! what grew since the last reading handed on, as [`OrderedCount`]s.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuHashMap};
use dio_trace_common::{fs::Fs, ordered::OrderedKey};

use crate::analysis::event::{fs_in, new_extent_in, sync_flavour_in};

/// The kernel map's name.
pub const ORDERED_MAP: &str = "ORDERED";

/// `n` more ordered writes under one key, with the labels it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderedCount {
    pub key: OrderedKey,
    pub n: u64,
}

impl OrderedCount {
    pub fn fs(&self) -> Fs {
        fs_in(self.key.flags)
    }

    /// "sync" or "dsync", as a write's report names it.
    pub fn sync_flavour(&self) -> &'static str {
        sync_flavour_in(self.key.flags)
    }

    /// Counted for its new or unwritten blocks, not for extending the file.
    pub fn new_extent(&self) -> bool {
        new_extent_in(self.key.flags)
    }
}

pub struct OrderedCounts {
    map: PerCpuHashMap<MapData, OrderedKey, u64>,
    /// Every key's total at the last reading.
    last: BTreeMap<OrderedKey, u64>,
}

impl OrderedCounts {
    pub fn new(map: PerCpuHashMap<MapData, OrderedKey, u64>) -> Self {
        Self {
            map,
            last: BTreeMap::new(),
        }
    }

    /// What grew since the last call, key by key (in key order, so two
    /// runs of the same workload report alike).
    pub fn grew(&mut self) -> Vec<OrderedCount> {
        let mut out = Vec::new();
        for (key, cpus) in self.map.iter().filter_map(Result::ok) {
            let total: u64 = cpus.iter().sum();
            let last = self.last.entry(key).or_default();
            if total > *last {
                out.push(OrderedCount {
                    key,
                    n: total - *last,
                });
                *last = total;
            }
        }
        out.sort_by_key(|c| c.key);
        out
    }
}
